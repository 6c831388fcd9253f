//! The NNEF reader for model files: NNEF's own operators and, of tract's `tract_core`
//! extension, only the two that NASNet's decluttered graphs use (`tract_core_downsample`, the
//! factorized reduction's stride, and `tract_core_cast`, in the model's properties).
//!
//! tract's default reader registers every `tract_core` operator (FFTs, recurrent cells,
//! einsums, quantized products, ...); each registration keeps that operator's code in the
//! binary, which is most of what an app would carry for nothing. A file that uses anything
//! else is refused with an error naming the operator.

use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::Downsample;
use tract_nnef::tract_core::ops::cast::Cast;

/// The reader of NASNet model files.
pub(super) fn reader() -> Nnef {
    Nnef {
        stdlib: tract_nnef::framework::stdlib(),
        registries: vec![tract_nnef::ops::tract_nnef(), tract_core_subset()],
        resource_loaders: vec![
            GraphNnefLoader.into_boxed(),
            DatLoader.into_boxed(),
            GraphQuantLoader.into_boxed(),
        ],
        allow_extended_identifier_syntax: false,
        extern_all_constants: false,
    }
}

/// The `tract_core` registry with the operators NASNet's graphs use. Parameters as tract's
/// own registry declares them, so files tract writes read the same.
fn tract_core_subset() -> Registry {
    let mut registry = Registry::new("tract_core");
    registry.register_primitive(
        "tract_core_downsample",
        &[
            TypeName::Scalar.tensor().named("input"),
            TypeName::Integer.named("axis"),
            TypeName::Integer.named("stride"),
            TypeName::Integer.named("modulo").default(0),
        ],
        &[("output", TypeName::Scalar.tensor())],
        downsample,
    );
    registry.register_primitive(
        "tract_core_cast",
        &[
            TypeName::Scalar.tensor().named("input"),
            TypeName::String.named("to"),
        ],
        &[("output", TypeName::Scalar.tensor())],
        cast,
    );
    registry
}

fn downsample(builder: &mut ModelBuilder, invocation: &ResolvedInvocation) -> TractResult<Value> {
    let input = invocation.named_arg_as(builder, "input")?;
    let axis = invocation.named_arg_as(builder, "axis")?;
    let stride = invocation.named_arg_as::<i64>(builder, "stride")?;
    let modulo = invocation.named_arg_as(builder, "modulo")?;
    ensure!(stride != 0, "tract_core_downsample with a stride of 0");
    builder.wire(
        Downsample {
            axis,
            stride: stride as isize,
            modulo,
        },
        &[input],
    )
}

fn cast(builder: &mut ModelBuilder, invocation: &ResolvedInvocation) -> TractResult<Value> {
    let input = invocation.named_arg_as(builder, "input")?;
    let to: DatumType = invocation.named_arg_as::<String>(builder, "to")?.parse()?;
    builder.wire(Cast { to }, &[input])
}
