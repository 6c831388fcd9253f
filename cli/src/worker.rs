//! `nasnet worker`, and the queue side of `nasnet search --redis`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nasnet_queue::{DatasetRef, Outcome, Queue, RedisEvaluator, WorkerEvent, WorkerOptions};
use nasnet_search::nas::evaluator::{ChildBudget, Evaluator};

/// `nasnet worker` options.
#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The Redis server the search publishes to (redis://HOST:PORT/).
    #[arg(long, value_name = "URL")]
    redis: String,
    /// The queue's name (as given to `nasnet search --queue`).
    #[arg(long, default_value = "nasnet")]
    queue: String,
    /// cpu, cuda or cuda:N (CUDA needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// This worker's name in the consumer group (default: HOST-PID). A second live worker
    /// with the same name on the queue is refused.
    #[arg(long)]
    name: Option<String>,
    /// Seconds a job may go without its worker's heartbeat before another worker takes it
    /// over (and a dead worker's name is free again).
    #[arg(long, default_value_t = 60.0)]
    visibility_timeout: f64,
    /// A job whose workers died this many times is answered as failed.
    #[arg(long, default_value_t = 3)]
    max_deliveries: usize,
    /// Exit after this many jobs.
    #[arg(long)]
    max_jobs: Option<usize>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

/// `nasnet worker`.
pub fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    nasnet_search::train::keep_freed_memory();
    anyhow::ensure!(
        args.visibility_timeout > 0.0,
        "--visibility-timeout must be positive"
    );
    let opts = WorkerOptions {
        url: args.redis.clone(),
        queue: Queue::new(&args.queue),
        name: args
            .name
            .unwrap_or_else(|| format!("{}-{}", hostname(), std::process::id())),
        device: crate::train::device(&args.device)?,
        visibility_timeout: Duration::from_secs_f64(args.visibility_timeout),
        max_deliveries: args.max_deliveries.max(1),
        cache: nasnet_runtime::nasnet_home(),
        max_jobs: args.max_jobs,
    };
    nasnet_queue::run_worker(&opts, |event| match event {
        WorkerEvent::Ready => eprintln!(
            "worker {} on {} (queue {}), waiting for jobs",
            opts.name, opts.url, opts.queue.name
        ),
        WorkerEvent::Started { job, reclaimed } => eprintln!(
            "job {job} started{}",
            if reclaimed { " (taken over)" } else { "" }
        ),
        WorkerEvent::Finished {
            job,
            outcome,
            seconds,
        } => match outcome {
            Outcome::Ok(r) => eprintln!("job {job} done: reward {:.4} in {seconds:.1} s", r.reward),
            Outcome::Failed(e) => eprintln!("job {job} failed: {e}"),
        },
        WorkerEvent::AlreadyDone { job } => eprintln!("job {job} already answered; skipped"),
        WorkerEvent::Problem { job, problem } => match job {
            Some(job) => eprintln!("job {job} left for another worker: {problem}"),
            None => eprintln!("{problem}"),
        },
    })?;
    Ok(())
}

/// The evaluator of `nasnet search --redis URL`: the search in `dir` publishes its children
/// on the queue.
pub fn redis_evaluator(
    url: &str,
    queue: &str,
    dir: &Path,
    budget: &ChildBudget,
    visibility_timeout: f64,
) -> anyhow::Result<Arc<dyn Evaluator>> {
    anyhow::ensure!(
        visibility_timeout > 0.0,
        "--visibility-timeout must be positive"
    );
    let dataset = match budget.synthetic_delay()? {
        Some(_) => None,
        None => Some(DatasetRef::new(
            &budget.dataset,
            &nasnet_runtime::nasnet_home(),
        )?),
    };
    let id = nasnet_queue::search_id(dir)?;
    let mut ev = RedisEvaluator::connect(url, Queue::new(queue), &id, budget.clone(), dataset)?;
    ev.republish_after = Duration::from_secs_f64(visibility_timeout);
    Ok(Arc::new(ev))
}
