//! Architecture search: the strategies learn (on a synthetic reward, a known function of the
//! genotype, so no training is involved), and the search loop journals, deduplicates and
//! resumes.

use std::sync::Arc;
use std::time::Duration;

use nasnet_search::nas::evaluator::{
    ChildResult, EvalError, Evaluator, SyntheticEvaluator, synthetic_score,
};
use nasnet_search::nas::journal::{JOURNAL_FILE, read_children};
use nasnet_search::nas::run::{SearchOptions, search};
use nasnet_search::nas::space::Space;
use nasnet_search::nas::strategy::{Kind, Strategy};

/// Mean reward of the last `tail` of `budget` children proposed by `kind`.
fn learn(kind: Kind, seed: u64, budget: usize, tail: usize) -> f64 {
    let space = Space::default();
    let ev = SyntheticEvaluator {
        delay: Duration::ZERO,
    };
    let mut s = Strategy::new(kind, space, seed).unwrap();
    let mut rewards = vec![];
    for id in 0..budget as u64 {
        let p = s.propose().unwrap();
        let r = ev.evaluate(&space.decode(&p.choices)).unwrap().reward;
        s.observe(id, &p, r).unwrap();
        rewards.push(r);
    }
    rewards[budget - tail..].iter().sum::<f64>() / tail as f64
}

#[test]
fn evolution_and_the_controller_beat_random_search() {
    let (budget, tail) = (1000, 200);
    let mut sums = [0.0; 3];
    for seed in [1, 2, 3] {
        let r: Vec<f64> = [Kind::Random, Kind::Evolution, Kind::Rl]
            .iter()
            .map(|&k| learn(k, seed, budget, tail))
            .collect();
        println!(
            "seed {seed}: mean reward of children {}..{budget}: random {:.3}, evolution {:.3}, rl {:.3}",
            budget - tail,
            r[0],
            r[1],
            r[2]
        );
        for k in 0..3 {
            sums[k] += r[k];
        }
        assert!(r[1] > r[0] + 0.15, "seed {seed}: evolution {r:?}");
        assert!(r[2] > r[0] + 0.15, "seed {seed}: rl {r:?}");
    }
    println!(
        "mean over seeds: random {:.3}, evolution {:.3}, rl {:.3}",
        sums[0] / 3.0,
        sums[1] / 3.0,
        sums[2] / 3.0
    );
}

fn synthetic(ms: u64) -> Arc<dyn Evaluator> {
    Arc::new(SyntheticEvaluator {
        delay: Duration::from_millis(ms),
    })
}

/// Works for `healthy` children, then reports itself unavailable (a queue gone away).
struct Outage {
    healthy: usize,
    calls: std::sync::atomic::AtomicUsize,
}

impl Evaluator for Outage {
    fn evaluate(&self, g: &nasnet_core::Genotype) -> Result<ChildResult, EvalError> {
        let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n >= self.healthy {
            return Err(EvalError::Unavailable("the queue went away".into()));
        }
        Ok(ChildResult {
            reward: synthetic_score(g),
            seconds: 0.0,
            params: 0,
        })
    }

    fn describe(&self) -> serde_json::Value {
        serde_json::json!({"kind": "outage"})
    }
}

#[test]
fn an_unavailable_evaluator_stops_the_search_without_failing_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SearchOptions {
        strategy: Kind::Random,
        space: Space::default(),
        seed: 3,
        budget: 6,
        workers: 1,
        evolution: Default::default(),
    };
    let outage = |healthy| Outage {
        healthy,
        calls: Default::default(),
    };
    let e = search(dir.path(), &opts, Arc::new(outage(3)), false, |_| {}).unwrap_err();
    let e = e.to_string();
    assert!(
        e.contains("the queue went away") && e.contains("resume the search"),
        "{e}"
    );
    let journal = std::fs::read_to_string(dir.path().join(JOURNAL_FILE)).unwrap();
    assert!(!journal.contains("\"kind\":\"failed\""), "{journal}");
    assert_eq!(read_children(dir.path()).unwrap().1.len(), 3);
    // Resumed when the evaluator works again: the interrupted child runs, none fails.
    search(
        dir.path(),
        &opts,
        Arc::new(outage(usize::MAX)),
        true,
        |_| {},
    )
    .unwrap();
    let (_, children) = read_children(dir.path()).unwrap();
    let ids: Vec<u64> = children.iter().map(|c| c.id).collect();
    assert_eq!(ids, (0..6).collect::<Vec<_>>());
}

#[test]
fn a_search_journals_every_child_once_and_extends_on_resume() {
    for kind in [Kind::Random, Kind::Evolution, Kind::Rl] {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = SearchOptions {
            strategy: kind,
            space: Space::default(),
            seed: 7,
            budget: 25,
            workers: 3,
            evolution: Default::default(),
        };
        let mut seen = 0;
        search(dir.path(), &opts, synthetic(1), false, |p| {
            assert!(p.done <= p.budget);
            seen += 1;
        })
        .unwrap();
        assert_eq!(seen, 25);
        let (k, first) = read_children(dir.path()).unwrap();
        assert_eq!(k, kind);
        assert_eq!(first.len(), 25);
        let ids: Vec<u64> = first.iter().map(|c| c.id).collect();
        assert_eq!(ids, (0..25).collect::<Vec<_>>());
        // Starting over in the same directory is refused; resuming with a larger budget
        // continues, keeping every finished child as it was.
        let e = search(dir.path(), &opts, synthetic(1), false, |_| {}).unwrap_err();
        assert!(e.to_string().contains("--resume"), "{e}");
        opts.budget = 40;
        search(dir.path(), &opts, synthetic(1), true, |_| {}).unwrap();
        let (_, all) = read_children(dir.path()).unwrap();
        assert_eq!(all.len(), 40);
        assert_eq!(&all[..25], &first[..]);
        // Another seed is another search.
        opts.seed = 8;
        let e = search(dir.path(), &opts, synthetic(1), true, |_| {}).unwrap_err();
        assert!(e.to_string().contains("other settings"), "{e}");
        let journal = std::fs::read_to_string(dir.path().join(JOURNAL_FILE)).unwrap();
        let results = journal
            .lines()
            .filter(|l| l.contains("\"kind\":\"result\""))
            .count();
        assert_eq!(results, 40, "each child has exactly one result");
    }
}

#[test]
fn a_resumed_search_proposes_what_an_uninterrupted_one_does() {
    // One worker makes the order deterministic: stopping after 30 children and resuming to
    // 60 must give the same 60 children as running to 60 at once.
    for kind in [Kind::Evolution, Kind::Rl] {
        let space = Space::default();
        let mut opts = SearchOptions {
            strategy: kind,
            space,
            seed: 3,
            budget: 60,
            workers: 1,
            evolution: nasnet_search::nas::strategy::EvolutionConfig {
                population: 10,
                sample: 3,
                identity_prob: 0.05,
            },
        };
        let whole = tempfile::tempdir().unwrap();
        search(whole.path(), &opts, synthetic(0), false, |_| {}).unwrap();
        let split = tempfile::tempdir().unwrap();
        opts.budget = 30;
        search(split.path(), &opts, synthetic(0), false, |_| {}).unwrap();
        opts.budget = 60;
        search(split.path(), &opts, synthetic(0), true, |_| {}).unwrap();
        let (_, a) = read_children(whole.path()).unwrap();
        let (_, b) = read_children(split.path()).unwrap();
        let hashes = |c: &[nasnet_search::nas::journal::Child]| {
            c.iter().map(|c| c.hash.clone()).collect::<Vec<_>>()
        };
        assert_eq!(hashes(&a), hashes(&b), "{kind:?}");
    }
}

#[test]
fn a_torn_journal_line_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = SearchOptions {
        strategy: Kind::Random,
        space: Space::default(),
        seed: 1,
        budget: 5,
        workers: 1,
        evolution: Default::default(),
    };
    search(dir.path(), &opts, synthetic(0), false, |_| {}).unwrap();
    let path = dir.path().join(JOURNAL_FILE);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"kind\":\"result\",\"id\":9");
    std::fs::write(&path, text).unwrap();
    opts.budget = 6;
    search(dir.path(), &opts, synthetic(0), true, |_| {}).unwrap();
    let (_, children) = read_children(dir.path()).unwrap();
    assert_eq!(children.len(), 6);
}
