//! `nasnet`, the command line: a thin front over the libraries. Each command parses its
//! arguments here and runs in the module that owns it:
//!
//! - the zoo (`zoo`): `models`, `pull`, `publish`, `cache`, and `import`, `synthetic` and
//!   `export`, which write model directories and their ONNX or NNEF forms;
//! - inference (`infer`): `classify` and `embed`, on tract, ONNX Runtime or Candle;
//! - `eval` (`eval`): a model's accuracy on a dataset's test split;
//! - `quantize` (`quantize`): int8 and weights-only forms of a model;
//! - `train` (`train`), `search` and `search report` (`search`), `worker` (`worker`), with
//!   their charts (`plot`);
//! - `completions`: shell completion scripts.

/// `println!` that returns the write's error instead of panicking: output into a closed pipe
/// (`nasnet models | head -1`) ends the command quietly (see `main`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

mod eval;
mod infer;
mod plot;
mod quantize;
mod search;
mod train;
mod worker;
mod zoo;

use zoo::{CacheAction, ZooArgs};

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use nasnet_core::{PoolingRule, Preset};
use nasnet_zoo::import::{ImportOptions, SourceFormat};

#[derive(Parser)]
#[command(
    name = "nasnet",
    version,
    about = "NASNet-A models: import, pull, classify, train, evaluate, search"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Only results and errors: no progress bars, notes or warnings.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// More diagnostics from nasnet and its libraries (downloads, ONNX Runtime): -v info, -vv
    /// debug, -vvv trace (--quiet wins). RUST_LOG (e.g. `RUST_LOG=ort=debug`) overrides both.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether `--quiet` was given: progress bars and notes are left out.
pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// Sends the diagnostics of nasnet and of its libraries (`tracing` events and `log` records:
/// hf-hub, reqwest, ONNX Runtime) to stderr: warnings by default, less with `--quiet`, more
/// with `-v`; `RUST_LOG` overrides.
fn init_logging(quiet: bool, verbose: u8) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    // hf-hub logs a failed download as an error of its own before returning it; the error
    // nasnet reports says the same, so that record shows from `-v` on.
    let directives = if verbose == 0 {
        format!("{level},hf_hub::retry=off")
    } else {
        level.to_owned()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(directives));
    // Fails only if a subscriber is already installed, which nothing here does.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .try_init();
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
    /// tract's NNEF: the prepared graph, read without an ONNX front end (the app library's
    /// model format).
    Nnef,
    Safetensors,
}

/// How to run a model (classify, embed).
#[derive(clap::Args)]
struct RunArgs {
    /// A model directory (model.json, model.onnx, model.safetensors) or a zoo id
    /// `ID[@VERSION]`, pulled on first use.
    #[arg(long, value_name = "DIR|ID", default_value = "nasnet-a-mobile")]
    model: String,
    #[command(flatten)]
    zoo: ZooArgs,
    /// The engine: tract (pure Rust), ort (ONNX Runtime) or candle (the network itself).
    #[arg(long, value_enum, default_value = "tract")]
    backend: infer::Backend,
    /// cpu, cuda or cuda:N (CUDA: ort, or candle built with --features cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Images per inference batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Threads per run: tract's pool (default: every core) or ONNX Runtime's intra-op threads.
    #[arg(long)]
    threads: Option<usize>,
    /// Images, directories of images, glob patterns, or float32 NCHW `.npy` batches.
    #[arg(required_unless_present = "files_from", value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Also the images in the subdirectories of directory inputs, at any depth.
    #[arg(short, long)]
    recursive: bool,
    /// Read more inputs from FILE, one path per line (`-`: standard input).
    #[arg(long, value_name = "FILE")]
    files_from: Option<PathBuf>,
}

impl RunArgs {
    /// Every input: the arguments, then the lines of --files-from, directories expanded.
    fn collect(&self) -> anyhow::Result<Vec<infer::Input>> {
        let mut args = self.inputs.clone();
        if let Some(list) = &self.files_from {
            args.extend(infer::read_list(list)?);
        }
        infer::collect(&args, self.recursive)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Convert an upstream weight file (timm/Cadene safetensors or .pth, Keras .h5) into a model
    /// directory.
    Import {
        /// The architecture the weights belong to.
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
        /// The architecture the weights belong to.
        #[arg(long, value_enum)]
        arch: Arch,
        /// Override F (a narrower network, e.g. for tests).
        #[arg(long)]
        filters: Option<usize>,
        /// Override the stem multiplier.
        #[arg(long)]
        stem_multiplier: Option<f64>,
        /// Override the number of classes.
        #[arg(long)]
        classes: Option<usize>,
        /// Replace DIR if it exists.
        #[arg(long)]
        force: bool,
        /// Output model directory.
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
    },
    /// List the models of the registry.
    Models {
        /// One JSON object per model.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        zoo: ZooArgs,
    },
    /// Download, verify and convert a model of the registry into the cache.
    #[command(after_help = "Examples:
  nasnet pull nasnet-a-mobile                       # the newest version
  nasnet pull nasnet-a-large@1.0.0 --force          # convert again
  nasnet pull my-model --registry https://example.org/zoo/registry.json")]
    Pull {
        /// `ID` (newest version) or `ID@VERSION`.
        spec: String,
        /// Convert again even if cached.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        zoo: ZooArgs,
    },
    /// Publish a trained model (a run directory) as an immutable version in a zoo directory,
    /// which any static HTTP server, or the directory itself, can serve to `nasnet pull`.
    #[command(after_help = "Examples:
  nasnet publish runs/fmnist --id fmnist-small --version 1.0.0 --to zoo
  nasnet pull fmnist-small --registry zoo/registry.json          # a plain directory
  nasnet pull fmnist-small --registry https://example.org/zoo/registry.json")]
    Publish {
        /// The model directory to publish: a finished `nasnet train` run, or any directory
        /// with model.json, model.safetensors and model.onnx.
        #[arg(value_name = "RUN")]
        run: PathBuf,
        /// The model's id in the zoo (letters, digits, '-', '_', '.').
        #[arg(long)]
        id: String,
        /// MAJOR.MINOR.PATCH; publishing a version that exists is refused.
        #[arg(long)]
        version: String,
        /// The zoo directory (created if missing); its registry.json lists every version.
        #[arg(long, value_name = "ZOO_DIR")]
        to: PathBuf,
        /// The URL the zoo directory will be served at, written into registry.json; without it
        /// the locations are relative to registry.json, which works both for a plain directory
        /// and for `--registry URL/registry.json`.
        #[arg(long, value_name = "URL")]
        base_url: Option<String>,
        /// The license of the weights, recorded in the registry.
        #[arg(long, default_value = "apache-2.0")]
        license: String,
    },
    /// Write a model directory's network as ONNX or NNEF, or its weights as safetensors.
    Export {
        /// A model directory, or a zoo id `ID[@VERSION]` (pulled on first use).
        #[arg(long, value_name = "DIR|ID")]
        model: String,
        #[command(flatten)]
        zoo: ZooArgs,
        /// What to write: the ONNX graph, tract's NNEF (`model.nnef.tar` in a model directory,
        /// which the NNEF-only C library opens) or the canonical safetensors weights.
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// The file to write (through a temporary file and a rename).
        #[arg(short, long, value_name = "PATH")]
        output: PathBuf,
    },
    /// Classify images, or preprocessed float32 NCHW tensors in `.npy` files.
    #[command(after_help = "Examples:
  nasnet classify photo.jpg                         # nasnet-a-mobile, pulled on first use
  nasnet classify --model nasnet-a-fashion-mnist --top-k 1 examples/images   # bundled, offline
  nasnet classify --model nasnet-a-large --recursive --format csv photos/ > predictions.csv
  find photos -name '*.jpg' | nasnet classify --files-from - --format json
  nasnet classify --backend ort --device cuda:0 --batch-size 32 photos/")]
    Classify {
        #[command(flatten)]
        run: RunArgs,
        /// Number of predictions per input.
        #[arg(long, default_value_t = 5)]
        top_k: usize,
        /// What to print: text, json (one object per input) or csv (one line per prediction).
        #[arg(long, value_enum, default_value = "text")]
        format: infer::ClassifyFormat,
        /// The same as --format json.
        #[arg(long, conflicts_with = "format")]
        json: bool,
    },
    /// List the models in the cache with their sizes, or remove one.
    Cache {
        #[command(subcommand)]
        action: Option<CacheAction>,
    },
    /// Print a shell completion script (e.g. `nasnet completions bash > ~/.local/share/bash-completion/completions/nasnet`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Train a NASNet network (or fine-tune a model) on a dataset; the run directory ends up
    /// a model directory.
    #[command(after_help = "Examples:
  nasnet train --dataset fashion-mnist:DIR --cells 2 --filters 8 --epochs 5 -o runs/fmnist
  nasnet train --dataset cifar10:DIR --genotype runs/search-rl/best_genotype.json -o runs/searched
  nasnet train --from nasnet-a-mobile --train head --dataset folder:photos --epochs 3 -o runs/tuned
  nasnet train --dataset fashion-mnist:DIR --resume -o runs/fmnist   # continue after a stop")]
    Train(Box<train::TrainArgs>),
    /// Top-1 / top-5 accuracy of a model on a dataset's test split.
    Eval(eval::EvalArgs),
    /// Quantize a model: int8 weights and activations (post-training, ranges calibrated on
    /// images), or int8 or float16 weights only.
    #[command(after_help = "Examples:
  nasnet quantize --model nasnet-a-fashion-mnist --calibrate fashion-mnist:DIR -o runs/fmnist-int8
  nasnet quantize --model nasnet-a-mobile --calibrate photos/ --calibration-count 200 -o mobile-int8
  nasnet quantize --model nasnet-a-mobile --precision int8-weights -o mobile-int8w")]
    Quantize(Box<quantize::QuantizeArgs>),
    /// Search the NASNet space for cells (the paper's RL controller, random search or
    /// regularized evolution), training children on a proxy dataset; `search report DIR...`
    /// summarizes searches.
    #[command(after_help = "Examples:
  nasnet search --dataset synthetic --budget 200 -o runs/try       # the machinery, in seconds
  nasnet search --strategy rl --dataset fashion-mnist:DIR --budget 60 -o runs/search-rl
  nasnet search --dataset cifar10:DIR --redis redis://127.0.0.1:6379/ --workers 8 -o runs/big
  nasnet search report runs/search-rl runs/search-random --plot search.svg")]
    Search(Box<search::SearchArgs>),
    /// Train the children that `nasnet search --redis URL` publishes, until stopped; run any
    /// number, on any machines that reach the Redis server and the dataset.
    Worker(worker::WorkerArgs),
    /// Write the pooled penultimate features (embeddings) of images.
    Embed {
        #[command(flatten)]
        run: RunArgs,
        /// npy: one [N, F] float32 array (its rows' inputs in FILE.paths.txt); jsonl: one object per
        /// row.
        #[arg(long, value_enum, default_value = "npy")]
        format: infer::EmbedFormat,
        /// Output file (`-` or absent: stdout, JSON Lines only).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// With npy output, write the rows of the inputs that worked when some fail (row i is
        /// then the i-th line of FILE.paths.txt, not input i).
        #[arg(long)]
        allow_missing: bool,
    },
}

/// `NASNET_JPEG_DECODER` (`libjpeg-turbo` or `rust`) chooses the JPEG decoder, for example
/// to reproduce what the C library's build without libjpeg-turbo gives.
fn jpeg_decoder_from_env() -> anyhow::Result<()> {
    use nasnet_core::preprocess::{JpegDecoder, set_jpeg_decoder};
    let Ok(name) = std::env::var("NASNET_JPEG_DECODER") else {
        return Ok(());
    };
    let decoder = match name.as_str() {
        "libjpeg-turbo" => JpegDecoder::LibjpegTurbo,
        "rust" => JpegDecoder::Rust,
        other => anyhow::bail!("NASNET_JPEG_DECODER={other}: not libjpeg-turbo or rust"),
    };
    set_jpeg_decoder(decoder).map_err(|e| anyhow::anyhow!("NASNET_JPEG_DECODER={name}: {e}"))
}

fn run() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    QUIET.store(cli.quiet, std::sync::atomic::Ordering::Relaxed);
    init_logging(cli.quiet, cli.verbose);
    jpeg_decoder_from_env()?;
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
                preprocessing: None,
                labels: None,
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
            filters,
            stem_multiplier,
            classes,
            force,
            output,
        } => {
            let preset = Preset::from(arch);
            let mut config = preset.config();
            config.filters = filters.unwrap_or(config.filters);
            config.stem_multiplier = stem_multiplier.unwrap_or(config.stem_multiplier);
            config.num_classes = classes.unwrap_or(config.num_classes);
            nasnet_zoo::import::write_synthetic_config(&output, preset.name(), config, force)?;
            eprintln!(
                "wrote {} with synthetic weights into {} (predictions are meaningless)",
                preset.name(),
                output.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            model,
            zoo,
            format,
            output,
        } => {
            let model = zoo.model_dir(&model)?;
            match format {
                ExportFormat::Onnx => {
                    let (_, net) = nasnet_model::load_model_dir(&model, &candle_core::Device::Cpu)?;
                    nasnet_model::onnx::write_onnx(&net, &output)?
                }
                ExportFormat::Nnef => zoo::export_nnef(&model, &output)?,
                ExportFormat::Safetensors => {
                    nasnet_zoo::import::export_safetensors(&model, &output)?
                }
            }
            if !quiet() {
                eprintln!("wrote {}", output.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Cache { action } => {
            match action.unwrap_or(CacheAction::List { json: false }) {
                CacheAction::List { json } => zoo::cache_list(json)?,
                CacheAction::Rm { spec } => zoo::cache_rm(&spec)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Models { json, zoo } => {
            zoo::models(&zoo, json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pull { spec, force, zoo } => {
            let registry = zoo.registry()?;
            let entry = registry.resolve(&spec)?;
            let opts = nasnet_zoo::fetch::PullOptions {
                offline: zoo.offline,
                force,
                progress: !quiet(),
            };
            let dir = nasnet_zoo::fetch::pull(entry, &nasnet_runtime::nasnet_home(), &opts)?;
            outln!("{}", dir.display())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Publish {
            run,
            id,
            version,
            to,
            base_url,
            license,
        } => {
            let entry = nasnet_zoo::publish::publish(&nasnet_zoo::publish::PublishOptions {
                run: &run,
                id: &id,
                version: &version,
                zoo: &to,
                base_url: base_url.as_deref(),
                license: &license,
            })?;
            if !quiet() {
                eprintln!(
                    "published {} into {} (registry: {})",
                    entry.spec(),
                    to.join(&id).join(&version).display(),
                    to.join(nasnet_zoo::publish::REGISTRY_FILE).display()
                );
            }
            outln!("{}", serde_json::to_string(&entry)?)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "nasnet", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Classify {
            run,
            top_k,
            format,
            json,
        } => {
            let inputs = run.collect()?;
            let dir = run.zoo.model_dir(&run.model)?;
            let model = infer::load(&dir, run.backend, &run.device, run.threads)?;
            let format = if json {
                infer::ClassifyFormat::Json
            } else {
                format
            };
            let ok = infer::classify(&model, &inputs, run.batch_size, top_k, format)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Train(args) => {
            train::run_train(*args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval(args) => {
            eval::run_eval(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Quantize(args) => {
            quantize::run_quantize(*args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Search(args) => {
            search::run_search(*args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Worker(args) => {
            worker::run_worker(args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Embed {
            run,
            format,
            output,
            allow_missing,
        } => {
            let inputs = run.collect()?;
            let dir = run.zoo.model_dir(&run.model)?;
            let model = infer::load(&dir, run.backend, &run.device, run.threads)?;
            let ok = infer::embed(
                &model,
                &inputs,
                run.batch_size,
                format,
                output.as_deref(),
                allow_missing,
            )?;
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

/// What to do when no source of a model can be reached (after the error, on its line).
const OFFLINE_HINT: &str = ". Without a network: --offline runs the models already in the \
cache (`nasnet cache` lists them) and the bundled nasnet-a-fashion-mnist; --registry DIR pulls \
from a registry on disk; `nasnet import --arch ARCH FILE -o DIR` converts weights you have";

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
            let hint = if err.chain().any(|e| {
                e.downcast_ref::<nasnet_zoo::Error>()
                    .is_some_and(nasnet_zoo::Error::is_unreachable)
            }) {
                OFFLINE_HINT
            } else {
                ""
            };
            eprintln!("nasnet: {}{hint}", one_line(&format!("{err:#}")));
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every option and argument of every command, with no help text.
    fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let builtin = matches!(a.get_id().as_str(), "help" | "version");
            if !builtin && !a.is_hide_set() && a.get_help().is_none() && a.get_long_help().is_none()
            {
                out.push(format!("{path}: {}", a.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            undocumented(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn the_everyday_commands_show_examples() {
        let cli = super::Cli::command();
        for name in ["classify", "pull", "train", "search", "publish"] {
            let sub = cli.find_subcommand(name).expect(name);
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.starts_with("Examples:") && help.contains(&format!("nasnet {name}")),
                "{name}: {help}"
            );
        }
    }

    #[test]
    fn every_option_has_help() {
        let mut missing = vec![];
        undocumented(&super::Cli::command(), "nasnet", &mut missing);
        assert!(missing.is_empty(), "options without help: {missing:#?}");
    }
}
