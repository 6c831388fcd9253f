//! The search's durable record: one JSON object per line in `journal.jsonl`, each appended and
//! flushed to disk (`fsync`) before the search goes on. A line cut short by a crash is dropped
//! when the journal is reopened.

use std::io::Write;
use std::path::{Path, PathBuf};

use nasnet_core::space::Genotype;
use serde::{Deserialize, Serialize};

use super::evaluator::ChildResult;
use super::space::Space;
use super::strategy::{EvolutionConfig, Kind, Proposed};

pub const JOURNAL_FILE: &str = "journal.jsonl";

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// The search's identity: a resumed search must match it.
    Start {
        strategy: Kind,
        space: Space,
        seed: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        evolution: Option<EvolutionConfig>,
        evaluator: serde_json::Value,
    },
    Proposal {
        id: u64,
        hash: String,
        genotype: Genotype,
        #[serde(flatten)]
        proposed: Proposed,
    },
    Result {
        id: u64,
        #[serde(flatten)]
        result: ChildResult,
        /// The same cell was evaluated before; its reward was reused, nothing trained.
        #[serde(default)]
        cached: bool,
    },
    /// The child could not be evaluated (it counts with reward 0).
    Failed { id: u64, error: String },
}

/// An error reading or writing the journal.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct JournalError {
    pub path: String,
    pub problem: String,
}

/// The open journal, for appending.
pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
}

impl Journal {
    /// Opens (or creates) `dir/journal.jsonl`, returning the records already in it. A last line
    /// without its newline (a write cut short) is removed.
    pub fn open(dir: &Path) -> Result<(Self, Vec<Record>), JournalError> {
        let path = dir.join(JOURNAL_FILE);
        let err = |problem: String| JournalError {
            path: path.display().to_string(),
            problem,
        };
        let text = match std::fs::read(&path) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(err(e.to_string())),
        };
        let complete = match text.rfind('\n') {
            Some(i) => i + 1,
            None => 0,
        };
        let mut records = vec![];
        for (n, line) in text[..complete].lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let r: Record =
                serde_json::from_str(line).map_err(|e| err(format!("line {}: {e}", n + 1)))?;
            records.push(r);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| err(e.to_string()))?;
        if complete < text.len() {
            file.set_len(complete as u64)
                .map_err(|e| err(format!("cannot drop a partial line: {e}")))?;
        }
        Ok((Self { path, file }, records))
    }

    /// Appends a record and waits until it is on disk.
    pub fn append(&mut self, r: &Record) -> Result<(), JournalError> {
        let err = |problem: String| JournalError {
            path: self.path.display().to_string(),
            problem,
        };
        let mut line = serde_json::to_string(r).map_err(|e| err(e.to_string()))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(|e| err(e.to_string()))?;
        self.file.sync_data().map_err(|e| err(e.to_string()))
    }
}

/// A finished child, as the report reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Child {
    pub id: u64,
    pub hash: String,
    pub genotype: Genotype,
    pub reward: f64,
    pub seconds: f64,
    pub params: usize,
    pub cached: bool,
    pub failed: bool,
}

/// The strategy and the finished children of a search directory, in proposal order.
pub fn read_children(dir: &Path) -> Result<(Kind, Vec<Child>), JournalError> {
    let path = dir.join(JOURNAL_FILE);
    if !path.exists() {
        return Err(JournalError {
            path: path.display().to_string(),
            problem: "no search journal here".into(),
        });
    }
    let (_, records) = Journal::open(dir)?;
    let mut kind = None;
    let mut proposals = std::collections::BTreeMap::new();
    let mut out = std::collections::BTreeMap::new();
    for r in records {
        match r {
            Record::Start { strategy, .. } => kind = Some(strategy),
            Record::Proposal {
                id, hash, genotype, ..
            } => {
                proposals.insert(id, (hash, genotype));
            }
            Record::Result { id, result, cached } => {
                if let Some((hash, genotype)) = proposals.get(&id) {
                    out.entry(id).or_insert(Child {
                        id,
                        hash: hash.clone(),
                        genotype: genotype.clone(),
                        reward: result.reward,
                        seconds: result.seconds,
                        params: result.params,
                        cached,
                        failed: false,
                    });
                }
            }
            Record::Failed { id, .. } => {
                if let Some((hash, genotype)) = proposals.get(&id) {
                    out.entry(id).or_insert(Child {
                        id,
                        hash: hash.clone(),
                        genotype: genotype.clone(),
                        reward: 0.0,
                        seconds: 0.0,
                        params: 0,
                        cached: false,
                        failed: true,
                    });
                }
            }
        }
    }
    let kind = kind.ok_or_else(|| JournalError {
        path: path.display().to_string(),
        problem: "no start record".into(),
    })?;
    Ok((kind, out.into_values().collect()))
}
