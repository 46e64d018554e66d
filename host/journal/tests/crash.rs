//! kill -9 at random points: a child process (this test binary, re-invoked
//! with `KASMINA_JOURNAL_CRASH_DIR` set) appends durable records and prints
//! each acknowledged sequence number; the parent SIGKILLs it after a random
//! number of acknowledgements, reopens the journal and checks that every
//! acknowledged record is present and intact and that nothing else was read.
//! Small segments make rotation happen under the kills too.
//!
//! Reproduce a failing run with `KASMINA_CRASH_SEED=<seed printed>`.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use kasmina_journal::{DecisionJournal, JournalConfig, decision_journal_config};
use leyline::journal::JournalRecord;
use leyline::{GateId, GateInputs, PerformanceStatus, SeedStage};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const CHILD_ENV: &str = "KASMINA_JOURNAL_CRASH_DIR";
const RUNS: usize = 60;
const MAX_ACKS_PER_RUN: usize = 25;

fn config() -> JournalConfig {
    JournalConfig { segment_bytes: 16 * 1024, compact_after_bytes: 1 << 30, ..decision_journal_config() }
}

/// The record for a sequence number: deterministic, 0.1–6 KB, so the parent
/// can check content and kills land inside multi-page writes.
fn record_for(seq: u64) -> JournalRecord {
    // The size varies through the layer list; every value is finite so
    // `==` can compare what was read back.
    let layers: Vec<String> = (0..(seq * 7919 % 50)).map(|k| format!("{seq}:{k}:{}", "v".repeat(80))).collect();
    let inputs = GateInputs {
        seed_id: format!("seed-{}", seq % 5),
        site: "hidden".to_owned(),
        blueprint_id: format!("bp-{seq}"),
        blueprint_known: true,
        current_stage: SeedStage::Training,
        expected_stage: SeedStage::Training,
        reported_stage: SeedStage::Training,
        parameters: BTreeMap::from([("lr".to_owned(), seq as f64 * 1e-3)]),
        parameter_bounds: BTreeMap::new(),
        kernel_attached: true,
        kernel_verified: true,
        fallback_used: false,
        isolation_violations: (seq % 4) as u32,
        max_cosine: 0.01,
        outputs_finite: true,
        loss_window: vec![0.5; (seq % 8) as usize],
        loss_variance_threshold: 1.0,
        kernel_latency_us: seq as f64,
        latency_budget_us: 5000.0,
        host_registered: true,
        required_layers: vec!["hidden".to_owned()],
        available_layers: layers,
        interface_matches: true,
        performance_status: PerformanceStatus::Nominal,
        metric_delta: 0.0,
        metric_tolerance: 0.02,
        reset_clean: true,
        blend: None,
        ranks: None,
    };
    JournalRecord::GateVerdict {
        seed_id: format!("seed-{}", seq % 5),
        gate: GateId::G2Stability,
        passed: seq.is_multiple_of(3),
        reason: format!("verdict for record {seq}"),
        attributes: std::collections::BTreeMap::from([("seq".to_owned(), leyline::AttrValue::Int(seq as i64))]),
        inputs,
        step: seq,
        recorded_at_ms: seq * 10,
    }
}

/// Child side: runs only when re-invoked by the parent.
#[test]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else { return };
    let (mut journal, _, _) = DecisionJournal::open(&dir, config()).expect("child opens journal");
    let mut out = std::io::stdout().lock();
    writeln!(out, "OPEN {}", journal.next_seq()).expect("stdout");
    out.flush().expect("stdout");
    loop {
        let seq = journal.next_seq().0;
        let got = journal.append_durable(&record_for(seq)).expect("durable append");
        assert_eq!(got.0, seq);
        writeln!(out, "ACK {seq}").expect("stdout");
        out.flush().expect("stdout");
    }
}

fn verify(dir: &Path, acked: &BTreeSet<u64>) -> u64 {
    let (journal, entries, _report) = DecisionJournal::open(dir, config()).expect("journal reopens after kill -9");
    for (k, e) in entries.iter().enumerate() {
        assert_eq!(e.seq.0, k as u64 + 1, "consecutive sequence numbers");
        assert_eq!(e.record, record_for(e.seq.0), "record {} read back intact", e.seq);
    }
    let present: BTreeSet<u64> = entries.iter().map(|e| e.seq.0).collect();
    let lost: Vec<_> = acked.difference(&present).collect();
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
    journal.next_seq().0
}

#[test]
fn kill_9_never_loses_an_acknowledged_record() {
    let seed: u64 = std::env::var("KASMINA_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    println!("KASMINA_CRASH_SEED={seed}");
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked = BTreeSet::new();
    let mut kills_mid_stream = 0;
    for run in 0..RUNS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child_writer", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // 0 acks: kill during start-up (possibly mid-recovery).
        let target = rng.gen_range(0..=MAX_ACKS_PER_RUN);
        let mut seen = 0;
        while seen < target {
            let Some(line) = lines.next() else { break };
            let line = line.unwrap();
            if let Some(seq) = line.strip_prefix("ACK ") {
                acked.insert(seq.parse::<u64>().unwrap());
                seen += 1;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // Acks that raced the kill are acknowledged too.
        for line in lines.map_while(Result::ok) {
            if let Some(seq) = line.strip_prefix("ACK ") {
                acked.insert(seq.parse::<u64>().unwrap());
            }
        }
        if seen == target && target > 0 {
            kills_mid_stream += 1;
        }
        // Verify on some runs only, so the child's own recovery also meets
        // torn tails on the others.
        if run % 3 == 0 || run + 1 == RUNS {
            verify(dir.path(), &acked);
        }
    }
    assert!(acked.len() > RUNS, "the children acknowledged {} records", acked.len());
    assert!(kills_mid_stream >= RUNS / 2, "{kills_mid_stream} kills landed mid-stream");
}
