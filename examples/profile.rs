//! Where tract spends its time on a model, by operator (the optimized plan, mean per run).
//!
//! `cargo run --release --example profile -- DIR [RUNS] [THREADS]`

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, rest @ ..] = args.as_slice() else {
        anyhow::bail!("usage: profile DIR [RUNS] [THREADS]");
    };
    let num = |i: usize, default: usize| -> anyhow::Result<usize> {
        rest.get(i)
            .map(|v| v.parse().context("a number"))
            .unwrap_or(Ok(default))
    };
    let runs = num(0, 5)?;
    let threads = rest.get(1).map(|t| t.parse()).transpose()?;
    let dir = std::path::Path::new(dir);
    let meta = nasnet::ModelMeta::load(dir)?;
    let ops = nasnet::runtime::profile_ops(
        &dir.join("model.onnx"),
        meta.preprocessing.crop,
        threads,
        runs,
    )?;
    let total: f64 = ops.iter().map(|o| o.2).sum();
    println!("| operator | nodes | ms per run | share |");
    println!("|---|---|---|---|");
    for (name, nodes, ms) in &ops {
        println!(
            "| {name} | {nodes} | {ms:.2} | {:.1} % |",
            100.0 * ms / total
        );
    }
    println!("| total | | {total:.2} | |");
    Ok(())
}
