//! What travels through the streams.

use nasnet_core::space::Genotype;
use nasnet_search::nas::evaluator::{ChildBudget, ChildResult};
use serde::{Deserialize, Serialize};

use crate::dataset::DatasetRef;

/// The consumer group every worker reads jobs in.
pub const GROUP: &str = "workers";

/// A queue's keys in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    pub name: String,
}

impl Queue {
    pub fn new(name: &str) -> Self {
        Self { name: name.into() }
    }

    /// The stream of jobs.
    pub fn jobs(&self) -> String {
        format!("{}:jobs", self.name)
    }

    /// The stream of results.
    pub fn results(&self) -> String {
        format!("{}:results", self.name)
    }

    /// Hash of the jobs published (job id -> stream entry), so each is published once.
    pub fn published(&self) -> String {
        format!("{}:published", self.name)
    }

    /// Hash of the jobs finished (job id -> its [`JobResult`], JSON): kept after the result
    /// stream is trimmed.
    pub fn done(&self) -> String {
        format!("{}:done", self.name)
    }
}

/// One child to evaluate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `SEARCH/HASH`: the search's id and the cell's canonical hash.
    pub id: String,
    pub genotype: Genotype,
    /// The dataset spec in here is the controller's; workers use `dataset` to find theirs.
    pub budget: ChildBudget,
    /// `None` for the synthetic evaluator.
    pub dataset: Option<DatasetRef>,
}

impl Job {
    pub fn id(search: &str, hash: &str) -> String {
        format!("{search}/{hash}")
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok(ChildResult),
    /// The child failed (its training diverged, or every worker that ran it died).
    Failed(String),
}

/// A result on the result stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub job: String,
    /// The worker that produced it.
    pub worker: String,
    pub outcome: Outcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_and_result_round_trip_through_json() {
        let job = Job {
            id: Job::id("s1", "abc"),
            genotype: Genotype::nasnet_a(),
            budget: ChildBudget {
                dataset: "synthetic:5".into(),
                cells: 1,
                filters: 8,
                epochs: 1,
                train_subset: Some(100),
                val_count: 50,
                batch_size: 32,
                lr: 0.05,
                seed: 3,
            },
            dataset: None,
        };
        let text = serde_json::to_string(&job).unwrap();
        assert_eq!(serde_json::from_str::<Job>(&text).unwrap(), job);
        let r = JobResult {
            job: job.id.clone(),
            worker: "w".into(),
            outcome: Outcome::Ok(ChildResult {
                reward: 0.5,
                seconds: 1.0,
                params: 7,
            }),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains(r#""ok":{"reward":0.5"#), "{text}");
        assert_eq!(serde_json::from_str::<JobResult>(&text).unwrap(), r);
    }
}
