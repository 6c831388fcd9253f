//! `nasnet`: import pretrained NASNet-A weights and classify images.

mod infer;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use nasnet_core::{PoolingRule, Preset};
use nasnet_zoo::import::{ImportOptions, SourceFormat};

#[derive(Parser)]
#[command(name = "nasnet", version, about = "NASNet-A models: import, classify")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Arch {
    #[value(name = "nasnet-a-large")]
    Large,
    #[value(name = "nasnet-a-mobile")]
    Mobile,
    #[value(name = "nasnet-a-cifar")]
    Cifar,
}

impl From<Arch> for Preset {
    fn from(a: Arch) -> Self {
        match a {
            Arch::Large => Preset::Large,
            Arch::Mobile => Preset::Mobile,
            Arch::Cifar => Preset::Cifar,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum Source {
    Timm,
    Cadene,
    Keras,
    Auto,
}

#[derive(Clone, Copy, ValueEnum)]
enum Pooling {
    Tf,
    Timm,
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Onnx,
    Safetensors,
}

/// How to run a model (classify, embed).
#[derive(clap::Args)]
struct RunArgs {
    /// Model directory (model.json, model.onnx, model.safetensors).
    #[arg(long, value_name = "DIR")]
    model: PathBuf,
    #[arg(long, value_enum, default_value = "tract")]
    backend: infer::Backend,
    /// cpu, cuda or cuda:N (CUDA: ort, or candle built with --features cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Images per inference batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Intra-op threads for ONNX Runtime.
    #[arg(long)]
    threads: Option<usize>,
    /// Images, directories of images, glob patterns, or float32 NCHW `.npy` batches.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Convert an upstream weight file (timm/Cadene safetensors or .pth, Keras .h5) into a model
    /// directory.
    Import {
        #[arg(long, value_enum)]
        arch: Arch,
        /// Upstream layout: `timm` implies timm's pooling rule and eval transform, `cadene` the
        /// TF rule and Cadene's, `keras` the TF rule; `auto` picks keras for .h5, timm for Large
        /// safetensors, cadene otherwise.
        #[arg(long, value_enum, default_value = "auto")]
        from: Source,
        /// Override the average-pool border rule.
        #[arg(long, value_enum)]
        pooling: Option<Pooling>,
        /// Replace DIR if it exists.
        #[arg(long)]
        force: bool,
        /// Output model directory.
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// The weight file.
        weights: PathBuf,
    },
    /// Write a model directory with deterministic synthetic weights (for trying pipelines and
    /// testing; its predictions mean nothing).
    Synthetic {
        #[arg(long, value_enum)]
        arch: Arch,
        /// Replace DIR if it exists.
        #[arg(long)]
        force: bool,
        /// Output model directory.
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
    },
    /// Write a model directory's network as ONNX or its weights as safetensors.
    Export {
        /// Model directory.
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        #[arg(long, value_enum)]
        format: ExportFormat,
        #[arg(short, long, value_name = "PATH")]
        output: PathBuf,
    },
    /// Classify images, or preprocessed float32 NCHW tensors in `.npy` files.
    Classify {
        #[command(flatten)]
        run: RunArgs,
        /// Number of predictions per input.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// One JSON object per image (per row for .npy) on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Write the pooled penultimate features (embeddings) of images.
    Embed {
        #[command(flatten)]
        run: RunArgs,
        #[arg(long, value_enum, default_value = "npy")]
        format: infer::EmbedFormat,
        /// Output file (`-` or absent: stdout, JSON Lines only).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    match cli.command {
        Command::Import {
            arch,
            from,
            pooling,
            force,
            output,
            weights,
        } => {
            let preset = Preset::from(arch);
            let opts = ImportOptions {
                name: preset.name().to_owned(),
                config: preset.config(),
                from: match from {
                    Source::Timm => Some(SourceFormat::Timm),
                    Source::Cadene => Some(SourceFormat::Cadene),
                    Source::Keras => Some(SourceFormat::Keras),
                    Source::Auto => None,
                },
                pooling: pooling.map(|p| match p {
                    Pooling::Tf => PoolingRule::Tf,
                    Pooling::Timm => PoolingRule::Timm,
                }),
                force,
            };
            let imported = nasnet_zoo::import::import(&weights, &output, &opts)
                .with_context(|| format!("cannot import {}", weights.display()))?;
            eprintln!(
                "imported {} ({} layout, {} pooling) into {}",
                imported.meta.name,
                imported.format.name(),
                imported.meta.architecture.pooling,
                output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Synthetic {
            arch,
            force,
            output,
        } => {
            let preset = Preset::from(arch);
            nasnet_zoo::import::write_synthetic(&output, preset, force)?;
            eprintln!(
                "wrote {} with synthetic weights into {} (predictions are meaningless)",
                preset.name(),
                output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            model,
            format,
            output,
        } => {
            match format {
                ExportFormat::Onnx => {
                    let (_, net) =
                        nasnet_search::load_model_dir(&model, &candle_core::Device::Cpu)?;
                    nasnet_search::onnx::write_onnx(&net, &output)?
                }
                ExportFormat::Safetensors => {
                    nasnet_zoo::import::export_safetensors(&model, &output)?
                }
            }
            eprintln!("wrote {}", output.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Classify { run, top_k, json } => {
            let inputs = infer::collect(&run.inputs)?;
            let model = infer::load(&run.model, run.backend, &run.device, run.threads)?;
            let ok = infer::classify(&model, &inputs, run.batch_size, top_k, json)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Embed {
            run,
            format,
            output,
        } => {
            let inputs = infer::collect(&run.inputs)?;
            let model = infer::load(&run.model, run.backend, &run.device, run.threads)?;
            let ok = infer::embed(&model, &inputs, run.batch_size, format, output.as_deref())?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// An error message on one line (some decoders put line breaks in theirs).
pub fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(err) => {
            if err.chain().any(|e| {
                e.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("nasnet: {}", one_line(&format!("{err:#}")));
            ExitCode::from(2)
        }
    }
}
