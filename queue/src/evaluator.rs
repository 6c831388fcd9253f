//! The search's side: an [`Evaluator`] that publishes children as jobs and waits for their
//! results.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nasnet_core::space::Genotype;
use nasnet_search::nas::evaluator::{ChildBudget, ChildResult, EvalError, Evaluator};
use nasnet_search::nas::space::genotype_hash;
use redis::Commands;
use redis::streams::{StreamReadOptions, StreamReadReply};
use sha2::{Digest, Sha256};

use crate::dataset::DatasetRef;
use crate::job::{GROUP, Job, JobResult, Outcome, Queue};
use crate::{Error, Result};

/// Publishes the job unless this search already did, atomically.
const PUBLISH: &str = r"
if redis.call('HSETNX', KEYS[1], ARGV[1], 'pending') == 1 then
  local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[2])
  redis.call('HSET', KEYS[1], ARGV[1], entry)
  return 1
end
return 0";

pub(crate) fn redis_error(url: &str) -> impl Fn(redis::RedisError) -> Error + '_ {
    move |e| Error::Redis {
        url: url.into(),
        problem: e.to_string(),
    }
}

/// Creates the consumer group (and the stream) unless it exists.
pub(crate) fn ensure_group(con: &mut redis::Connection, queue: &Queue) -> redis::RedisResult<()> {
    let r: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(queue.jobs())
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query(con);
    match r {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        r => r,
    }
}

/// The id of the search in `dir`: made once, kept in `dir/queue-id`, so that a resumed search
/// finds its jobs again.
pub fn search_id(dir: &Path) -> Result<String> {
    let path = dir.join("queue-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(Error::Io {
                path: path.display().to_string(),
                error,
            });
        }
    }
    let io = |error| Error::Io {
        path: path.display().to_string(),
        error,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let seed = format!(
        "{}|{}|{:?}",
        std::process::id(),
        std::fs::canonicalize(dir)
            .unwrap_or_else(|_| dir.to_path_buf())
            .display(),
        std::time::SystemTime::now()
    );
    let id: String = Sha256::digest(seed.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let tmp = dir.join(".queue-id.partial");
    std::fs::write(&tmp, &id).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(id)
}

#[derive(Default)]
struct State {
    /// The first result of each of this search's jobs.
    results: HashMap<String, Outcome>,
    /// Since when Redis has been unreachable, and why.
    down: Option<(Instant, String)>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

/// Sends children to workers through Redis Streams (see the crate's documentation).
pub struct RedisEvaluator {
    url: String,
    client: redis::Client,
    queue: Queue,
    search: String,
    budget: ChildBudget,
    dataset: Option<DatasetRef>,
    shared: Arc<Shared>,
    collector: Option<JoinHandle<()>>,
    /// How long Redis may stay unreachable before the search stops.
    pub patience: Duration,
}

impl RedisEvaluator {
    /// Connects (failing now if Redis cannot be reached) and starts collecting results,
    /// including those that arrived while no controller ran.
    pub fn connect(
        url: &str,
        queue: Queue,
        search: &str,
        budget: ChildBudget,
        dataset: Option<DatasetRef>,
    ) -> Result<Self> {
        let client = redis::Client::open(url).map_err(redis_error(url))?;
        let mut con = client
            .get_connection_with_timeout(Duration::from_secs(10))
            .map_err(redis_error(url))?;
        ensure_group(&mut con, &queue).map_err(redis_error(url))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let collector = {
            let (client, shared, queue) = (client.clone(), shared.clone(), queue.clone());
            let prefix = format!("{search}/");
            std::thread::Builder::new()
                .name("queue-results".into())
                .spawn(move || collect(&client, &queue, &prefix, &shared))
                .map_err(|error| Error::Io {
                    path: "result collector thread".into(),
                    error,
                })?
        };
        Ok(Self {
            url: url.into(),
            client,
            queue,
            search: search.into(),
            budget,
            dataset,
            shared,
            collector: Some(collector),
            patience: Duration::from_secs(300),
        })
    }

    fn publish(&self, job: &Job) -> redis::RedisResult<()> {
        let mut con = self
            .client
            .get_connection_with_timeout(Duration::from_secs(10))?;
        let text = serde_json::to_string(job).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "job", e.to_string()))
        })?;
        redis::cmd("EVAL")
            .arg(PUBLISH)
            .arg(2)
            .arg(self.queue.published())
            .arg(self.queue.jobs())
            .arg(&job.id)
            .arg(text)
            .exec(&mut con)
    }
}

/// Reads the result stream from its start, keeping the first result of each of this search's
/// jobs; reconnects when Redis goes away, recording since when.
fn collect(client: &redis::Client, queue: &Queue, prefix: &str, shared: &Shared) {
    let mut last = "0".to_string();
    let opts = StreamReadOptions::default().block(500).count(256);
    let mut con: Option<redis::Connection> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        let read: redis::RedisResult<Option<StreamReadReply>> = match con.as_mut() {
            Some(c) => c.xread_options(&[queue.results()], &[&last], &opts),
            None => client
                .get_connection_with_timeout(Duration::from_secs(2))
                .and_then(|c| {
                    // A silent network must not block the reader forever.
                    c.set_read_timeout(Some(Duration::from_secs(10)))?;
                    con = Some(c);
                    Ok(None)
                }),
        };
        let mut state = match shared.state.lock() {
            Ok(s) => s,
            Err(_) => return,
        };
        match read {
            Ok(reply) => {
                state.down = None;
                for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
                    last = entry.id.clone();
                    let Some(text) = entry.get::<String>("result") else {
                        continue;
                    };
                    let Ok(r) = serde_json::from_str::<JobResult>(&text) else {
                        continue;
                    };
                    if r.job.starts_with(prefix) {
                        state.results.entry(r.job).or_insert(r.outcome);
                    }
                }
            }
            Err(e) => {
                con = None;
                state
                    .down
                    .get_or_insert_with(|| (Instant::now(), e.to_string()));
            }
        }
        drop(state);
        shared.changed.notify_all();
        if con.is_none() {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

impl Evaluator for RedisEvaluator {
    fn evaluate(&self, genotype: &Genotype) -> Result<ChildResult, EvalError> {
        let job = Job {
            id: Job::id(&self.search, &genotype_hash(genotype)),
            genotype: genotype.clone(),
            budget: self.budget.clone(),
            dataset: self.dataset.clone(),
        };
        let unavailable =
            |problem: String| EvalError::Unavailable(format!("Redis at {}: {problem}", self.url));
        let t0 = Instant::now();
        while let Err(e) = self.publish(&job) {
            if t0.elapsed() > self.patience {
                return Err(unavailable(e.to_string()));
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        let mut state = self
            .shared
            .state
            .lock()
            .map_err(|_| unavailable("the result collector stopped".into()))?;
        loop {
            if let Some(outcome) = state.results.get(&job.id) {
                return match outcome {
                    Outcome::Ok(r) => Ok(r.clone()),
                    Outcome::Failed(e) => Err(EvalError::Child(e.clone())),
                };
            }
            if let Some((since, problem)) = &state.down
                && since.elapsed() > self.patience
            {
                return Err(unavailable(problem.clone()));
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, Duration::from_secs(1))
                .map_err(|_| unavailable("the result collector stopped".into()))?
                .0;
        }
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "kind": "queue",
            "queue": self.queue.name,
            "budget": self.budget,
            "dataset_sha256": self.dataset.as_ref().map(|d| d.sha256.clone()),
        })
    }
}

impl Drop for RedisEvaluator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.collector.take() {
            let _ = h.join();
        }
    }
}
