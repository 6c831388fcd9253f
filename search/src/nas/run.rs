//! The search loop: a pool of `workers` children in flight (tokio orchestrates; each child
//! trains on a blocking thread), the strategy proposing a new child as soon as one finishes,
//! every proposal and result journaled before it is acted on, and the strategy's state saved
//! after every event — so a search killed at any point resumes without losing or re-training
//! a finished child.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use nasnet_core::space::Genotype;

use super::evaluator::{ChildResult, EvalError, Evaluator};
use super::journal::{JOURNAL_FILE, Journal, JournalError, Record};
use super::space::{Space, genotype_hash};
use super::strategy::{EvolutionConfig, Kind, Proposed, Strategy, StrategyError};

/// A search's error.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Strategy(#[from] StrategyError),
    #[error("{0}")]
    Setup(String),
    /// Another process is running a search in the directory.
    #[error(transparent)]
    Busy(#[from] nasnet_core::fsutil::LockError),
    #[error("the evaluator stopped working: {0} (resume the search when it works again)")]
    Unavailable(String),
}

type Result<T> = std::result::Result<T, SearchError>;

/// What to search.
#[derive(Debug, Clone)]
pub struct SearchOptions {
    pub strategy: Kind,
    pub space: Space,
    pub seed: u64,
    /// Children to evaluate in all.
    pub budget: usize,
    /// Children in flight at once.
    pub workers: usize,
    /// Population and tournament size of evolution.
    pub evolution: EvolutionConfig,
}

/// Reported as the search goes.
#[derive(Debug, Clone)]
pub struct Progress {
    pub done: usize,
    pub budget: usize,
    pub best: f64,
    pub last_id: u64,
    pub last_reward: f64,
    pub cached: bool,
}

/// One proposal: its id, decisions and decoded genotype.
#[derive(Debug, Clone)]
struct Child {
    id: u64,
    proposed: Proposed,
    genotype: Genotype,
    hash: String,
}

/// Runs (or, with `resume`, continues) a search in `dir`.
pub fn search(
    dir: &Path,
    opts: &SearchOptions,
    evaluator: Arc<dyn Evaluator>,
    resume: bool,
    mut on_progress: impl FnMut(&Progress),
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| SearchError::Setup(format!("{}: {e}", dir.display())))?;
    // One writer per search directory, until this function returns.
    let _lock = nasnet_core::fsutil::Lock::try_dir(dir)?;
    let exists = nasnet_core::fsutil::existing_run(dir, JOURNAL_FILE, "a search", resume)
        .map_err(SearchError::Setup)?;
    if resume && !exists {
        return Err(SearchError::Setup(format!(
            "{}: no search to resume",
            dir.display()
        )));
    }
    let (mut journal, records) = Journal::open(dir)?;
    let start = Record::Start {
        strategy: opts.strategy,
        space: opts.space,
        seed: opts.seed,
        evolution: (opts.strategy == Kind::Evolution).then_some(opts.evolution),
        evaluator: evaluator.describe(),
    };
    match records.first() {
        None => journal.append(&start)?,
        Some(first) if *first == start => {}
        Some(first) => {
            return Err(SearchError::Setup(format!(
                "{}: the search there was started with other settings: {}",
                dir.join(JOURNAL_FILE).display(),
                serde_json::to_string(first).unwrap_or_default()
            )));
        }
    }

    let mut strategy = Strategy::new(opts.strategy, opts.space, opts.seed)?;
    strategy.evolution = opts.evolution;
    strategy.load(dir)?;
    // Rebuild the search's state from the journal, replaying into the strategy the events
    // (at most one) it had not saved when the process stopped.
    let (seen_p, seen_o) = strategy.counts();
    let mut children: BTreeMap<u64, Child> = BTreeMap::new();
    let mut finished: BTreeMap<u64, f64> = BTreeMap::new();
    let mut by_hash: HashMap<String, ChildResult> = HashMap::new();
    let (mut n_p, mut n_o) = (0u64, 0u64);
    for r in records.iter().skip(1) {
        match r {
            Record::Proposal {
                id,
                hash,
                genotype,
                proposed,
            } => {
                if n_p >= seen_p {
                    let again = strategy.propose()?;
                    if again.choices != proposed.choices {
                        return Err(SearchError::Setup(format!(
                            "{}: proposal {id} does not replay; the strategy state does not match the journal",
                            dir.display()
                        )));
                    }
                }
                n_p += 1;
                children.insert(
                    *id,
                    Child {
                        id: *id,
                        proposed: proposed.clone(),
                        genotype: genotype.clone(),
                        hash: hash.clone(),
                    },
                );
            }
            Record::Result { id, .. } | Record::Failed { id, .. } => {
                let reward = match r {
                    Record::Result { result, .. } => result.reward,
                    _ => 0.0,
                };
                if finished.contains_key(id) {
                    continue;
                }
                let Some(child) = children.get(id) else {
                    continue;
                };
                if n_o >= seen_o {
                    strategy.observe(*id, &child.proposed, reward)?;
                }
                n_o += 1;
                finished.insert(*id, reward);
                if let Record::Result { result, .. } = r {
                    by_hash.insert(child.hash.clone(), result.clone());
                }
            }
            Record::Start { .. } => {}
        }
    }
    if n_p > seen_p || n_o > seen_o {
        strategy.save(dir)?;
    }
    // Children proposed but not finished when the search stopped run again first.
    let mut queue: Vec<Child> = children
        .values()
        .filter(|c| !finished.contains_key(&c.id))
        .cloned()
        .collect();
    queue.reverse();
    let mut next_id = children.keys().next_back().map_or(0, |k| k + 1);
    let mut best = finished.values().copied().fold(f64::NEG_INFINITY, f64::max);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(opts.workers.max(1))
        .build()
        .map_err(|e| SearchError::Setup(format!("cannot start the worker pool: {e}")))?;
    let outcome = rt.block_on(async {
        let mut running = tokio::task::JoinSet::new();
        loop {
            while running.len() < opts.workers.max(1) {
                let child = match queue.pop() {
                    Some(c) => c,
                    None if (children.len()) < opts.budget => {
                        let proposed = strategy.propose()?;
                        let genotype = opts.space.decode(&proposed.choices);
                        let hash = genotype_hash(&genotype);
                        let c = Child {
                            id: next_id,
                            proposed,
                            genotype,
                            hash,
                        };
                        next_id += 1;
                        journal.append(&Record::Proposal {
                            id: c.id,
                            hash: c.hash.clone(),
                            genotype: c.genotype.clone(),
                            proposed: c.proposed.clone(),
                        })?;
                        strategy.save(dir)?;
                        children.insert(c.id, c.clone());
                        c
                    }
                    None => break,
                };
                if let Some(known) = by_hash.get(&child.hash).cloned() {
                    // The same cell again: reuse its reward instead of training it twice.
                    let result = ChildResult {
                        seconds: 0.0,
                        ..known
                    };
                    journal.append(&Record::Result {
                        id: child.id,
                        result: result.clone(),
                        cached: true,
                    })?;
                    strategy.observe(child.id, &child.proposed, result.reward)?;
                    strategy.save(dir)?;
                    finished.insert(child.id, result.reward);
                    best = best.max(result.reward);
                    on_progress(&Progress {
                        done: finished.len(),
                        budget: opts.budget,
                        best,
                        last_id: child.id,
                        last_reward: result.reward,
                        cached: true,
                    });
                    continue;
                }
                let ev = evaluator.clone();
                running.spawn_blocking(move || {
                    let r = ev.evaluate(&child.genotype);
                    (child, r)
                });
            }
            let Some(joined) = running.join_next().await else {
                break;
            };
            let (child, outcome) = joined
                .map_err(|e| SearchError::Setup(format!("a child evaluation panicked: {e}")))?;
            let reward = match &outcome {
                Ok(result) => {
                    journal.append(&Record::Result {
                        id: child.id,
                        result: result.clone(),
                        cached: false,
                    })?;
                    by_hash.insert(child.hash.clone(), result.clone());
                    result.reward
                }
                Err(EvalError::Child(error)) => {
                    journal.append(&Record::Failed {
                        id: child.id,
                        error: error.clone(),
                    })?;
                    0.0
                }
                // The child stays unfinished in the journal and runs again on resume.
                Err(EvalError::Unavailable(error)) => {
                    return Err(SearchError::Unavailable(error.clone()));
                }
            };
            strategy.observe(child.id, &child.proposed, reward)?;
            strategy.save(dir)?;
            finished.insert(child.id, reward);
            best = best.max(reward);
            on_progress(&Progress {
                done: finished.len(),
                budget: opts.budget,
                best,
                last_id: child.id,
                last_reward: reward,
                cached: false,
            });
        }
        Ok::<(), SearchError>(())
    });
    // Children still in flight after an error are not waited for.
    rt.shutdown_background();
    outcome
}
