//! The worker's side: take jobs (new ones, or ones whose worker died), train, answer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nasnet_search::nas::evaluator::{EvalError, Evaluator};
use redis::Commands;
use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamPendingCountReply,
    StreamReadOptions, StreamReadReply,
};

use crate::Result;
use crate::evaluator::{ensure_group, redis_error};
use crate::job::{GROUP, Job, JobResult, Outcome, Queue};

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    pub url: String,
    pub queue: Queue,
    /// This worker's consumer name; unique among live workers.
    pub name: String,
    /// Where children train.
    pub device: candle_core::Device,
    /// A job pending this long without its worker renewing it is taken over.
    pub visibility_timeout: Duration,
    /// A job delivered this many times (its workers died) is answered as failed.
    pub max_deliveries: usize,
    /// Where datasets referenced by URL are downloaded.
    pub cache: PathBuf,
    /// Stop after this many jobs (`None`: run until stopped).
    pub max_jobs: Option<usize>,
}

/// What a worker reports as it goes.
#[derive(Debug, Clone)]
pub enum WorkerEvent {
    /// Connected, with its name: waiting for jobs.
    Ready,
    Started {
        job: String,
        reclaimed: bool,
    },
    Finished {
        job: String,
        outcome: Outcome,
        seconds: f64,
    },
    /// The job already had a result (its first worker died after writing it).
    AlreadyDone {
        job: String,
    },
    /// A problem with this worker, not with the job: the job is left for another worker.
    Problem {
        job: Option<String>,
        problem: String,
    },
}

type Evaluators = HashMap<String, Arc<dyn Evaluator>>;

/// Runs a worker until `max_jobs` are done (or forever).
pub fn run_worker(opts: &WorkerOptions, mut on_event: impl FnMut(WorkerEvent)) -> Result<()> {
    let url = opts.url.as_str();
    let client = redis::Client::open(url).map_err(redis_error(url))?;
    let mut con = connect(&client).map_err(redis_error(url))?;
    ensure_group(&mut con, &opts.queue).map_err(redis_error(url))?;
    let _name = NameLease::take(&client, &mut con, opts)?;
    on_event(WorkerEvent::Ready);
    let mut evaluators = Evaluators::new();
    let mut done = 0usize;
    while opts.max_jobs.is_none_or(|m| done < m) {
        // A Redis error leaves the job (if any) pending: this worker or another takes it
        // over later. Report it, wait, reconnect.
        let step = next_job(&mut con, opts).and_then(|next| match next {
            Some((entry, reclaimed)) => process(
                &client,
                &mut con,
                opts,
                &entry,
                reclaimed,
                &mut evaluators,
                &mut on_event,
            ),
            None => Ok(false),
        });
        match step {
            Ok(answered) => done += usize::from(answered),
            Err(e) => {
                on_event(WorkerEvent::Problem {
                    job: None,
                    problem: format!("Redis at {url}: {e}"),
                });
                std::thread::sleep(Duration::from_secs(1));
                if let Ok(mut c) = connect(&client) {
                    // A Redis that restarted without its data has lost the group too.
                    let _ = ensure_group(&mut c, &opts.queue);
                    con = c;
                }
            }
        }
    }
    Ok(())
}

fn connect(client: &redis::Client) -> redis::RedisResult<redis::Connection> {
    let con = client.get_connection_with_timeout(Duration::from_secs(10))?;
    // A silent network must not block a read forever.
    con.set_read_timeout(Some(Duration::from_secs(30)))?;
    Ok(con)
}

/// A job whose worker has been silent for the visibility timeout, else a new one (waiting up
/// to a second).
fn next_job(
    con: &mut redis::Connection,
    opts: &WorkerOptions,
) -> redis::RedisResult<Option<(StreamId, bool)>> {
    let idle = opts.visibility_timeout.as_millis() as usize;
    let claimed: StreamAutoClaimReply = con.xautoclaim_options(
        opts.queue.jobs(),
        GROUP,
        &opts.name,
        idle,
        "0-0",
        StreamAutoClaimOptions::default().count(1),
    )?;
    if let Some(entry) = claimed.claimed.into_iter().next() {
        return Ok(Some((entry, true)));
    }
    let read: Option<StreamReadReply> = con.xread_options(
        &[opts.queue.jobs()],
        &[">"],
        &StreamReadOptions::default()
            .group(GROUP, &opts.name)
            .count(1)
            .block(1000),
    )?;
    Ok(read
        .into_iter()
        .flat_map(|r| r.keys)
        .flat_map(|k| k.ids)
        .next()
        .map(|e| (e, false)))
}

/// Writes the result, marks the job done and acknowledges it, in one transaction.
fn answer(
    con: &mut redis::Connection,
    queue: &Queue,
    entry: &str,
    result: &JobResult,
) -> redis::RedisResult<()> {
    let text = serde_json::to_string(result).map_err(|e| {
        redis::RedisError::from((redis::ErrorKind::Client, "result", e.to_string()))
    })?;
    redis::pipe()
        .atomic()
        .cmd("XADD")
        .arg(queue.results())
        .arg("*")
        .arg("job")
        .arg(&result.job)
        .arg("result")
        .arg(&text)
        .cmd("HSET")
        .arg(queue.done())
        .arg(&result.job)
        .arg(&text)
        .ignore()
        .cmd("XACK")
        .arg(queue.jobs())
        .arg(GROUP)
        .arg(entry)
        .ignore()
        .exec(con)
}

/// [`answer`], reconnecting and retrying for a minute: the connection may have gone stale
/// during a long training, and the result is worth keeping. A repeat is harmless (the
/// controller records a job's first result).
fn answer_retrying(
    client: &redis::Client,
    con: &mut redis::Connection,
    queue: &Queue,
    entry: &str,
    result: &JobResult,
) -> redis::RedisResult<()> {
    let mut last = match answer(con, queue, entry, result) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    for _ in 0..60 {
        std::thread::sleep(Duration::from_secs(1));
        match connect(client).and_then(|mut c| answer(&mut c, queue, entry, result).map(|()| c)) {
            Ok(c) => {
                *con = c;
                return Ok(());
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Handles one delivered job; returns whether it was answered. Redis errors end the worker's
/// attempt (the job stays pending and is taken over later).
fn process(
    client: &redis::Client,
    con: &mut redis::Connection,
    opts: &WorkerOptions,
    entry: &StreamId,
    reclaimed: bool,
    evaluators: &mut Evaluators,
    on_event: &mut impl FnMut(WorkerEvent),
) -> redis::RedisResult<bool> {
    let queue = &opts.queue;
    let ack = |con: &mut redis::Connection| -> redis::RedisResult<()> {
        let _: usize = con.xack(queue.jobs(), GROUP, &[&entry.id])?;
        Ok(())
    };
    let job: Job = match entry
        .get::<String>("job")
        .and_then(|t| serde_json::from_str(&t).ok())
    {
        Some(j) => j,
        None => {
            // Nobody can run it, and no search can be waiting for it under an id.
            on_event(WorkerEvent::Problem {
                job: None,
                problem: format!("stream entry {} is not a job; dropped", entry.id),
            });
            ack(con)?;
            return Ok(false);
        }
    };
    let answered: bool = con.hexists(queue.done(), &job.id)?;
    if answered {
        ack(con)?;
        on_event(WorkerEvent::AlreadyDone { job: job.id });
        return Ok(false);
    }
    if reclaimed {
        let pending: StreamPendingCountReply =
            con.xpending_count(queue.jobs(), GROUP, &entry.id, &entry.id, 1)?;
        let deliveries = pending.ids.first().map_or(1, |p| p.times_delivered);
        if deliveries > opts.max_deliveries {
            let outcome = Outcome::Failed(format!(
                "given up after {} deliveries: no worker answered it (they stopped, or could \
                 not run it; see their logs)",
                deliveries - 1
            ));
            let result = JobResult {
                job: job.id.clone(),
                worker: opts.name.clone(),
                outcome: outcome.clone(),
            };
            answer(con, queue, &entry.id, &result)?;
            on_event(WorkerEvent::Finished {
                job: job.id,
                outcome,
                seconds: 0.0,
            });
            return Ok(true);
        }
    }
    on_event(WorkerEvent::Started {
        job: job.id.clone(),
        reclaimed,
    });
    // Held from here: loading a large dataset may take longer than the visibility timeout.
    let lease = Lease::start(client, opts, &entry.id);
    let evaluator = match evaluator_for(&job, opts, evaluators) {
        Ok(ev) => ev,
        Err(problem) => {
            // This worker cannot run it (e.g. it lacks the dataset); another may.
            on_event(WorkerEvent::Problem {
                job: Some(job.id),
                problem,
            });
            std::thread::sleep(Duration::from_secs(1));
            return Ok(false);
        }
    };
    let t0 = Instant::now();
    let outcome = evaluator.evaluate(&job.genotype);
    drop(lease);
    let outcome = match outcome {
        Ok(r) => Outcome::Ok(r),
        Err(EvalError::Child(e)) => Outcome::Failed(e),
        Err(EvalError::Unavailable(problem)) => {
            on_event(WorkerEvent::Problem {
                job: Some(job.id),
                problem,
            });
            return Ok(false);
        }
    };
    let result = JobResult {
        job: job.id.clone(),
        worker: opts.name.clone(),
        outcome: outcome.clone(),
    };
    answer_retrying(client, con, queue, &entry.id, &result)?;
    on_event(WorkerEvent::Finished {
        job: job.id,
        outcome,
        seconds: t0.elapsed().as_secs_f64(),
    });
    Ok(true)
}

/// The evaluator for a job's budget and dataset, built once per distinct pair.
fn evaluator_for(
    job: &Job,
    opts: &WorkerOptions,
    evaluators: &mut Evaluators,
) -> Result<Arc<dyn Evaluator>, String> {
    let key = serde_json::json!([job.budget, job.dataset]).to_string();
    if let Some(ev) = evaluators.get(&key) {
        return Ok(ev.clone());
    }
    let mut budget = job.budget.clone();
    if let Some(d) = &job.dataset {
        budget.dataset = d.resolve(&opts.cache).map_err(|e| e.to_string())?;
    }
    let ev = budget.evaluator(&opts.device).map_err(|e| e.to_string())?;
    evaluators.insert(key, ev.clone());
    Ok(ev)
}

/// Runs `f` every `period` on a thread of its own until dropped.
struct Periodic {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Periodic {
    fn start(period: Duration, mut f: impl FnMut() + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(period) {
                f();
            }
        });
        Self {
            stop: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Periodic {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs `cmd` on a connection that is made again after an error.
fn with_connection(
    client: &redis::Client,
    con: &mut Option<redis::Connection>,
    cmd: &redis::Cmd,
) -> Option<redis::Value> {
    if con.is_none() {
        *con = connect(client).ok();
    }
    let c = con.as_mut()?;
    match cmd.query(c) {
        Ok(v) => Some(v),
        Err(_) => {
            *con = None;
            None
        }
    }
}

/// Keeps a job's pending entry fresh while it runs, by re-claiming it for this worker every
/// third of the visibility timeout, so that no other worker takes it over.
struct Lease {
    _renewing: Periodic,
}

impl Lease {
    fn start(client: &redis::Client, opts: &WorkerOptions, entry: &str) -> Self {
        let client = client.clone();
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(opts.queue.jobs())
            .arg(GROUP)
            .arg(&opts.name)
            .arg(0)
            .arg(entry)
            .arg("JUSTID");
        let mut con = None;
        Self {
            _renewing: Periodic::start(opts.visibility_timeout / 3, move || {
                with_connection(&client, &mut con, &cmd);
            }),
        }
    }
}

/// Sets `KEYS[1]` to this worker's token for `ARGV[2]` ms unless another worker holds it.
const CLAIM_NAME: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1";

/// Deletes `KEYS[1]` if this worker holds it.
const RELEASE_NAME: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// This worker's name in `Q:worker:NAME`, held while it runs: taken at start (refused when a
/// live worker has it), renewed every third of the visibility timeout, expiring a visibility
/// timeout after the worker stops renewing it, released on a clean exit.
struct NameLease {
    renew: Option<Periodic>,
    client: redis::Client,
    key: String,
    token: String,
}

impl NameLease {
    fn take(
        client: &redis::Client,
        con: &mut redis::Connection,
        opts: &WorkerOptions,
    ) -> Result<Self> {
        let key = format!("{}:worker:{}", opts.queue.name, opts.name);
        let token = format!(
            "{}:{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let ttl = opts.visibility_timeout.as_millis().max(1) as u64;
        let mut claim = redis::cmd("EVAL");
        claim.arg(CLAIM_NAME).arg(1).arg(&key).arg(&token).arg(ttl);
        let taken: i64 = claim.query(con).map_err(redis_error(&opts.url))?;
        if taken == 0 {
            return Err(crate::Error::NameTaken {
                queue: opts.queue.name.clone(),
                name: opts.name.clone(),
                timeout: opts.visibility_timeout,
            });
        }
        let renew = {
            let client = client.clone();
            let mut con = None;
            Periodic::start(opts.visibility_timeout / 3, move || {
                with_connection(&client, &mut con, &claim);
            })
        };
        Ok(Self {
            renew: Some(renew),
            client: client.clone(),
            key,
            token,
        })
    }
}

impl Drop for NameLease {
    fn drop(&mut self) {
        // Stop renewing first, so that nothing sets the name again after its release.
        drop(self.renew.take());
        if let Ok(mut con) = connect(&self.client) {
            let _: redis::RedisResult<i64> = redis::cmd("EVAL")
                .arg(RELEASE_NAME)
                .arg(1)
                .arg(&self.key)
                .arg(&self.token)
                .query(&mut con);
        }
    }
}
