//! The search's side: an [`Evaluator`] that publishes children as jobs and waits for their
//! results.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
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

/// Publishes a job unless it is done or already in the stream, atomically: returns the
/// result (JSON) of a job that is done, 1 for a job published now and 0 for one that waits in
/// the stream. A job whose stream entry is gone (Redis restarted without its data, or the
/// entry was deleted) is published again.
const PUBLISH: &str = r"
local done = redis.call('HGET', KEYS[3], ARGV[1])
if done then return done end
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if entry and #redis.call('XRANGE', KEYS[2], entry, entry) > 0 then return 0 end
entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], entry)
return 1";

/// What [`PUBLISH`] found.
enum Published {
    /// The job waits in the stream (just published, or before).
    Waiting,
    /// The job is done: its result.
    Done(JobResult),
}

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
    /// The first result of each of this search's jobs, and its entry in the result stream.
    results: HashMap<String, (Outcome, String)>,
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
    /// How often a job still unanswered is checked for in Redis, and published again if
    /// Redis lost it (a restart without persistence).
    pub republish_after: Duration,
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
            republish_after: Duration::from_secs(60),
        })
    }

    /// Publishes the job unless it is done or waiting in the stream (see [`PUBLISH`]).
    fn publish(&self, job: &Job) -> redis::RedisResult<Published> {
        let mut con = self
            .client
            .get_connection_with_timeout(Duration::from_secs(10))?;
        let text = serde_json::to_string(job).map_err(|e| {
            redis::RedisError::from((redis::ErrorKind::Client, "job", e.to_string()))
        })?;
        let found: redis::Value = redis::cmd("EVAL")
            .arg(PUBLISH)
            .arg(3)
            .arg(self.queue.published())
            .arg(self.queue.jobs())
            .arg(self.queue.done())
            .arg(&job.id)
            .arg(text)
            .query(&mut con)?;
        Ok(match found {
            redis::Value::BulkString(b) => match serde_json::from_slice::<JobResult>(&b) {
                Ok(r) => Published::Done(r),
                // Not a result: the stream will bring it.
                Err(_) => Published::Waiting,
            },
            _ => Published::Waiting,
        })
    }

    /// [`Self::publish`], retrying while Redis is unreachable for up to [`Self::patience`].
    fn publish_patiently(&self, job: &Job) -> Result<Published, EvalError> {
        let t0 = Instant::now();
        loop {
            match self.publish(job) {
                Ok(p) => return Ok(p),
                Err(e) if t0.elapsed() > self.patience => {
                    return Err(EvalError::Unavailable(format!(
                        "Redis at {}: {e}",
                        self.url
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_secs(1)),
            }
        }
    }

    /// Deletes a result this search has taken from the result stream: `Q:done` keeps it for
    /// a resumed search, so the stream need not.
    fn trim(&self, entry: &str) {
        let deleted = self
            .client
            .get_connection_with_timeout(Duration::from_secs(10))
            .and_then(|mut con| con.xdel::<_, _, usize>(self.queue.results(), &[entry]));
        if let Err(e) = deleted {
            tracing::warn!(
                "Redis at {}: cannot delete result {entry} from {}: {e}",
                self.url,
                self.queue.results()
            );
        }
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
        // Second answers to a job (one published again after Redis lost it while a worker
        // ran it): the first stands, and these leave the stream at once.
        let mut repeats: Vec<String> = vec![];
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
                        match state.results.entry(r.job) {
                            Entry::Vacant(v) => {
                                v.insert((r.outcome, entry.id.clone()));
                            }
                            Entry::Occupied(_) => repeats.push(entry.id.clone()),
                        }
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
        if let (Some(c), false) = (con.as_mut(), repeats.is_empty()) {
            // Best effort: one left behind only takes room.
            let _ = c.xdel::<_, _, usize>(queue.results(), &repeats);
        }
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
        let outcome = |o: &Outcome| match o {
            Outcome::Ok(r) => Ok(r.clone()),
            Outcome::Failed(e) => Err(EvalError::Child(e.clone())),
        };
        if let Published::Done(r) = self.publish_patiently(&job)? {
            return outcome(&r.outcome);
        }
        let mut published = Instant::now();
        let mut state = self
            .shared
            .state
            .lock()
            .map_err(|_| unavailable("the result collector stopped".into()))?;
        loop {
            if let Some((o, entry)) = state.results.get(&job.id) {
                let (o, entry) = (o.clone(), entry.clone());
                drop(state);
                self.trim(&entry);
                return outcome(&o);
            }
            if let Some((since, problem)) = &state.down
                && since.elapsed() > self.patience
            {
                return Err(unavailable(problem.clone()));
            }
            if state.down.is_none() && published.elapsed() > self.republish_after {
                // Neither answered nor seen for a while: make sure Redis still has the job.
                drop(state);
                if let Published::Done(r) = self.publish_patiently(&job)? {
                    return outcome(&r.outcome);
                }
                published = Instant::now();
                state = self
                    .shared
                    .state
                    .lock()
                    .map_err(|_| unavailable("the result collector stopped".into()))?;
                continue;
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
