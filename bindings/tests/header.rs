//! The committed header `bindings/include/nasnet.h` is what cbindgen generates from the
//! source. Regenerate with `NASNET_BLESS=1 cargo test -p nasnet-bindings --test header`.

#[test]
fn committed_header_is_current() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let config =
        cbindgen::Config::from_file(format!("{dir}/cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = vec![];
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let path = format!("{dir}/include/nasnet.h");
    if std::env::var_os("NASNET_BLESS").is_some() {
        std::fs::write(&path, &generated).expect("write the header");
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{path} differs from what cbindgen generates; regenerate it with NASNET_BLESS=1 cargo test -p nasnet-bindings --test header"
    );
}
