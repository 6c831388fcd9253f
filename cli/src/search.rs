//! `nasnet search` and `nasnet search report`.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use nasnet_core::space::{CellGenotype, Combine, Genotype};
use nasnet_search::nas::evaluator::ChildBudget;
use nasnet_search::nas::journal::{Child, read_children};
use nasnet_search::nas::run::{SearchOptions, search};
use nasnet_search::nas::space::Space;
use nasnet_search::nas::strategy::{EvolutionConfig, Kind};

use crate::plot::{self, Panel};
use plotters::chart::SeriesLabelPosition;

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum StrategyArg {
    Rl,
    Random,
    Evolution,
}

#[derive(clap::Subcommand)]
pub enum SearchCommand {
    /// Summarize searches: top cells, the best-so-far / top-5 / top-25 curves (one line per
    /// directory's strategy), cell diagrams, the best genotype as JSON.
    Report {
        /// Search directories (e.g. one per strategy).
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Cells listed per search.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Where the plot goes: SVG or PNG, by the extension (default: DIR/search.svg of the
        /// first directory).
        #[arg(long)]
        plot: Option<PathBuf>,
    },
}

/// `nasnet search` options.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SearchArgs {
    #[command(subcommand)]
    pub command: Option<SearchCommand>,
    /// How children are proposed: rl (LSTM controller with PPO, the paper), evolution (regularized evolution) or random.
    #[arg(long, value_enum, default_value = "rl")]
    strategy: StrategyArg,
    /// The proxy dataset (cifar10:DIR, fashion-mnist:DIR, mnist:DIR, folder:DIR), or
    /// `synthetic[:MS]`: a known function of the genotype instead of training (each child
    /// taking MS milliseconds), for trying the machinery.
    #[arg(long)]
    dataset: Option<String>,
    /// Children to evaluate in all.
    #[arg(long, default_value_t = 100)]
    budget: usize,
    /// Epochs each child trains.
    #[arg(long, default_value_t = 1)]
    child_epochs: usize,
    /// N of the child networks.
    #[arg(long, default_value_t = 2)]
    cells: usize,
    /// F of the child networks.
    #[arg(long, default_value_t = 8)]
    filters: usize,
    /// Train children on a fixed seeded subset of this many images.
    #[arg(long, value_name = "COUNT")]
    train_subset: Option<usize>,
    /// Held-out images the reward is measured on (fixed, seeded).
    #[arg(long, default_value_t = 5000)]
    val_count: usize,
    /// Images per training step of a child.
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Peak learning rate of a child's training (cosine schedule).
    #[arg(long, default_value_t = 0.05)]
    lr: f64,
    /// Children trained at once (in this process, or in flight on the queue with --redis).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Send children to `nasnet worker` processes through Redis Streams at this URL
    /// (redis://HOST:PORT/) instead of training them here.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// The queue's name: its streams are QUEUE:jobs and QUEUE:results.
    #[arg(long, default_value = "nasnet", requires = "redis")]
    queue: String,
    /// With --redis: seconds a child may wait unanswered before the search checks that Redis
    /// still holds its job, and publishes it again if Redis lost it (a restart without
    /// persistence).
    #[arg(long, default_value_t = 60.0, requires = "redis", value_name = "SECS")]
    visibility_timeout: f64,
    /// Evolution: population size (the first this many children are random).
    #[arg(long, default_value_t = 100)]
    population: usize,
    /// Evolution: tournament size.
    #[arg(long, default_value_t = 25)]
    sample: usize,
    /// Blocks per cell (B).
    #[arg(long, default_value_t = 5)]
    blocks: usize,
    /// Seed of the search (proposals, children's weights and data order).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue the search in DIR.
    #[arg(long)]
    resume: bool,
    /// The search directory: journal.jsonl, the strategy's state, and the report.
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
}

/// What each child is trained on and for how long.
fn budget(args: &SearchArgs, spec: &str) -> ChildBudget {
    ChildBudget {
        dataset: spec.to_owned(),
        cells: args.cells,
        filters: args.filters,
        epochs: args.child_epochs,
        train_subset: args.train_subset,
        val_count: args.val_count,
        batch_size: args.batch_size,
        lr: args.lr,
        seed: args.seed,
    }
}

/// `nasnet search`.
pub fn run_search(args: SearchArgs) -> anyhow::Result<()> {
    if let Some(SearchCommand::Report { dirs, top, plot }) = &args.command {
        return report(dirs, *top, plot.as_deref());
    }
    let (Some(spec), Some(dir)) = (&args.dataset, &args.output) else {
        bail!("nasnet search needs --dataset and -o DIR (or: nasnet search report DIR...)");
    };
    nasnet_search::train::keep_freed_memory();
    let opts = SearchOptions {
        strategy: match args.strategy {
            StrategyArg::Rl => Kind::Rl,
            StrategyArg::Random => Kind::Random,
            StrategyArg::Evolution => Kind::Evolution,
        },
        space: Space {
            blocks: args.blocks,
            search_combine: true,
        },
        seed: args.seed,
        budget: args.budget,
        workers: args.workers.max(1),
        evolution: EvolutionConfig {
            population: args.population.max(1),
            sample: args.sample.clamp(1, args.population.max(1)),
            ..EvolutionConfig::default()
        },
    };
    let budget = budget(&args, spec);
    if args.redis.is_some() && args.workers == 1 && !crate::quiet() {
        eprintln!("note: --workers 1 keeps one child in flight, so only one worker is busy");
    }
    let ev = match &args.redis {
        Some(url) => {
            crate::worker::redis_evaluator(url, &args.queue, dir, &budget, args.visibility_timeout)?
        }
        None => budget.evaluator(&candle_core::Device::Cpu)?,
    };
    let pb = if crate::quiet() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.budget as u64)
    };
    pb.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} models  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t0 = std::time::Instant::now();
    search(dir, &opts, ev, args.resume, |p| {
        pb.set_position(p.done as u64);
        pb.set_message(format!("best {:.4}  last {:.4}", p.best, p.last_reward));
        if pb.is_hidden() && !crate::quiet() {
            eprintln!(
                "model {}/{}  id {}  reward {:.4}{}  best {:.4}",
                p.done,
                p.budget,
                p.last_id,
                p.last_reward,
                if p.cached { " (cached)" } else { "" },
                p.best
            );
        }
    })?;
    pb.finish_and_clear();
    eprintln!(
        "search finished in {:.0} s; report:",
        t0.elapsed().as_secs_f64()
    );
    report(std::slice::from_ref(dir), 5, None)
}

/// Best-so-far and running top-k means after each child, in proposal order.
pub fn curves(children: &[Child]) -> [Vec<(f64, f64)>; 3] {
    let mut sorted: Vec<f64> = vec![];
    let mut out = [vec![], vec![], vec![]];
    for (n, c) in children.iter().enumerate() {
        let at = sorted.partition_point(|&r| r > c.reward);
        sorted.insert(at, c.reward);
        let mean = |k: usize| {
            let k = k.min(sorted.len());
            sorted[..k].iter().sum::<f64>() / k as f64
        };
        let x = (n + 1) as f64;
        out[0].push((x, sorted[0]));
        out[1].push((x, mean(5)));
        out[2].push((x, mean(25)));
    }
    out
}

/// A named line of `(x, y)` points.
type Series = (String, Vec<(f64, f64)>);

fn report(dirs: &[PathBuf], top: usize, plot_path: Option<&Path>) -> anyhow::Result<()> {
    let mut panels: [Vec<Series>; 3] = [vec![], vec![], vec![]];
    for dir in dirs {
        let (kind, children) = read_children(dir)?;
        if children.is_empty() {
            outln!(
                "{}: {} search, no finished child yet",
                dir.display(),
                kind.name()
            )?;
            continue;
        }
        let mut ranked: Vec<&Child> = children.iter().collect();
        ranked.sort_by(|a, b| b.reward.total_cmp(&a.reward));
        let trained: Vec<&Child> = children.iter().filter(|c| !c.cached).collect();
        let secs: f64 = trained.iter().map(|c| c.seconds).sum();
        outln!(
            "{} ({} search): {} children, {} trained, {:.1} s per trained child",
            dir.display(),
            kind.name(),
            children.len(),
            trained.len(),
            secs / trained.len().max(1) as f64
        )?;
        outln!("  rank  id     reward  params    seconds  hash")?;
        for (r, c) in ranked.iter().take(top).enumerate() {
            outln!(
                "  {:>4}  {:<5}  {:.4}  {:>8}  {:>7.1}  {}{}",
                r + 1,
                c.id,
                c.reward,
                c.params,
                c.seconds,
                c.hash,
                if c.cached { " (cached)" } else { "" }
            )?;
        }
        let [best, top5, top25] = curves(&children);
        let last = |v: &Vec<(f64, f64)>| v.last().map_or(0.0, |p| p.1);
        outln!(
            "  after {} children: best {:.4}, top-5 mean {:.4}, top-25 mean {:.4}",
            children.len(),
            last(&best),
            last(&top5),
            last(&top25)
        )?;
        let name = kind.name().to_string();
        panels[0].push((name.clone(), best));
        panels[1].push((name.clone(), top5));
        panels[2].push((name, top25));
        let best = ranked[0];
        write_best(dir, &best.genotype)?;
    }
    if panels[0].is_empty() {
        return Ok(());
    }
    let path = plot_path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dirs[0].join("search.svg"));
    let titles = ["best reward", "top-5 mean", "top-25 mean"];
    let panels: Vec<Panel> = panels
        .iter()
        .zip(titles)
        .map(|(series, title)| Panel {
            title,
            x_label: "models",
            integer_x: true,
            legend: SeriesLabelPosition::LowerRight,
            series: series
                .iter()
                .map(|(n, v)| plot::Series {
                    name: n.as_str(),
                    points: v.clone(),
                    // One marker per model is clutter past a few dozen.
                    markers: v.len() <= 30,
                    thin: v.len() > 200,
                })
                .collect(),
        })
        .collect();
    plot::write_panels(&path, &panels)?;
    outln!("plot: {}", path.display())?;
    Ok(())
}

/// Writes `best_genotype.json` (for `nasnet train --genotype`) and the best cells as Graphviz
/// DOT, with SVG and PNG renderings where `dot` is installed.
fn write_best(dir: &Path, g: &Genotype) -> anyhow::Result<()> {
    let json = dir.join("best_genotype.json");
    let tmp = dir.join("best_genotype.json.partial");
    std::fs::write(&tmp, g.to_json()).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &json).with_context(|| format!("cannot write {}", json.display()))?;
    outln!("  best genotype: {}", json.display())?;
    for (name, cell) in [("normal", &g.normal), ("reduction", &g.reduction)] {
        let path = dir.join(format!("best_{name}.dot"));
        std::fs::write(&path, cell_dot(name, cell))
            .with_context(|| format!("cannot write {}", path.display()))?;
        let mut drawn = vec![];
        for fmt in ["svg", "png"] {
            let out = path.with_extension(fmt);
            let status = std::process::Command::new("dot")
                .arg(format!("-T{fmt}"))
                .arg(&path)
                .arg("-o")
                .arg(&out)
                .status();
            if status.is_ok_and(|s| s.success()) {
                drawn.push(out.display().to_string());
            }
        }
        outln!(
            "  {name} cell: {}{}",
            path.display(),
            if drawn.is_empty() {
                " (install graphviz for SVG/PNG)".to_string()
            } else {
                format!(", {}", drawn.join(", "))
            }
        )?;
    }
    Ok(())
}

/// A cell in the style of the paper's Figure 4: inputs, yellow operation boxes, green
/// combiners, and the blue concatenation of the cell's output states.
pub fn cell_dot(name: &str, cell: &CellGenotype) -> String {
    let mut s = format!(
        "digraph {name} {{\n  rankdir=BT;\n  node [fontname=\"Helvetica\", style=filled];\n"
    );
    s += "  s0 [label=\"h[i]\", shape=box, fillcolor=\"#9ecae1\"];\n";
    s += "  s1 [label=\"h[i-1]\", shape=box, fillcolor=\"#9ecae1\"];\n";
    for (b, block) in cell.blocks.iter().enumerate() {
        let state = b + 2;
        let comb = match block.combine {
            Combine::Add => "add",
            Combine::Concat => "concat",
        };
        s += &format!("  s{state} [label=\"{comb}\", shape=circle, fillcolor=\"#a1d99b\"];\n");
        for k in 0..2 {
            s += &format!(
                "  op{b}_{k} [label=\"{}\", shape=box, fillcolor=\"#fee391\"];\n  s{} -> op{b}_{k};\n  op{b}_{k} -> s{state};\n",
                block.ops[k].name(),
                block.inputs[k]
            );
        }
    }
    s += "  out [label=\"concat\", shape=box, fillcolor=\"#6baed6\"];\n";
    for st in cell.output_states() {
        s += &format!("  s{st} -> out;\n");
    }
    s += "  out_h [label=\"h[i+1]\", shape=box, fillcolor=\"#9ecae1\"];\n  out -> out_h;\n}\n";
    s
}
