//! Power cuts under the daemon's control plane: the real embedded host
//! (plugins, Urza, libtorch, HMAC) journals onto a simulated disk
//! ([`SimStorage`]) that loses every unsynced byte at the cut. A workload
//! of signed commands and trainer step reports (seeds attach, pass their
//! gates, pause, resume, are culled), with segments and compaction small
//! enough to rotate and compact many times, is cut at points spread over
//! all its file-system calls and at every call of one compaction and one
//! rotation. After each cut the control plane restarts on the disk and:
//! - every seed's stage, blueprint, pause and blend mode equal those after
//!   the last acknowledged call (or, only when the call in flight ended in
//!   an "outcome unknown" error, after that call);
//! - a call refused `journal_unavailable` (nothing applied) never shows up;
//! - every acknowledged command id is refused `nonce_replayed`;
//! - every active seed's GERMINATE record is still in the journal (it
//!   carries the blend spec and mesh; compaction once wrote it after the
//!   snapshot, so a cut between them lost it).
//!
//! `KASMINA_POWER_CUT_ALL=1` cuts at every op instead of a spread.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::BTreeSet;

use kasmina_daemon::DaemonHost;
use kasmina_journal::storage::sim::PowerCut;
use kasmina_journal::{DecisionJournal, JournalConfig, decision_journal_config};
use leyline::api::KasminaApi;
use leyline::journal::{JournalRecord, replay_start};
use leyline::{AdaptationCommand, CommandPayload, ReasonCode, SeedOperation};
use support::sim_disk::{SeedView, SimDaemon, journal_dir, view};
use support::{SimTrainer, command, pause, registration};

fn config() -> JournalConfig {
    JournalConfig { segment_bytes: 2 * 1024, compact_after_bytes: 6 * 1024, ..decision_journal_config() }
}

#[derive(Debug, Clone)]
enum Call {
    Register,
    Command(String, SeedOperation, usize),
    Pause(String, bool, usize),
    Steps(usize),
}

/// The workload: four seeds through germination, training, blending, a
/// pause and resume, a cull.
fn plan() -> Vec<Call> {
    use Call::*;
    let seed = |i: usize| i;
    vec![
        Register,
        Command("g0".into(), SeedOperation::Germinate, seed(0)),
        Steps(5),
        Command("g1".into(), SeedOperation::Germinate, seed(1)),
        Steps(5),
        Pause("p0".into(), false, seed(0)),
        Steps(2),
        Pause("r0".into(), true, seed(0)),
        Command("g2".into(), SeedOperation::Germinate, seed(2)),
        Steps(6),
        Command("c1".into(), SeedOperation::Cull, seed(1)),
        Command("g3".into(), SeedOperation::Germinate, seed(3)),
        Steps(6),
        Command("c3".into(), SeedOperation::Cull, seed(3)),
        Steps(3),
    ]
}

fn seed(i: usize) -> String {
    format!("hidden-{i}")
}

fn signed(call: &Call) -> Option<AdaptationCommand> {
    match call {
        Call::Command(id, op, i) => Some(command(id, &seed(*i), *op, true)),
        Call::Pause(id, resume, i) => Some(pause(id, &seed(*i), *resume)),
        _ => None,
    }
}

/// How the workload ended.
#[derive(Debug, Default)]
struct Log {
    /// State after the last answered call.
    acked: Vec<SeedView>,
    /// State after a call that ended "outcome unknown" (it may be durable).
    unknown: Option<Vec<SeedView>>,
    /// Accepted command ids.
    acked_ids: Vec<String>,
    /// Calls answered.
    calls: u64,
    /// A call was refused `journal_unavailable` (nothing applied).
    refused: bool,
}

/// Runs the plan until the journal refuses a call; op ranges per call
/// are recorded in `ranges` (first op, last op, what).
fn workload(d: &SimDaemon, host: &DaemonHost, ranges: &mut Vec<(u64, u64, String)>) -> Log {
    let mut log = Log { acked: view(host), ..Log::default() };
    let mut trainer = SimTrainer::new(100);
    for call in plan() {
        let reps = if let Call::Steps(n) = call { n } else { 1 };
        for _ in 0..reps {
            let first = d.disk.stats().ops + 1;
            let compactions = host.recorder().unwrap().stats().compactions.load(std::sync::atomic::Ordering::Relaxed);
            let answer: Result<Option<String>, String> = match &call {
                Call::Register => host.register_host(registration()).map(|_| None).map_err(|e| e.message),
                Call::Steps(_) => trainer.try_step(host).map(|_| None).map_err(|e| e.message),
                _ => {
                    let cmd = signed(&call).unwrap();
                    let id = cmd.command_id.clone();
                    match host.submit_command(cmd) {
                        Ok(o) if o.accepted => Ok(Some(id)),
                        Ok(o) if o.reason == Some(ReasonCode::JournalUnavailable) => Err("refused".into()),
                        Ok(o) => panic!("command {id} refused for another reason: {o:?}"),
                        Err(e) => Err(e.message),
                    }
                }
            };
            let after = host.recorder().unwrap().stats().compactions.load(std::sync::atomic::Ordering::Relaxed);
            let what = if after > compactions { format!("{call:?} (compaction)") } else { format!("{call:?}") };
            ranges.push((first, d.disk.stats().ops, what));
            match answer {
                Ok(id) => {
                    log.calls += 1;
                    log.acked = view(host);
                    log.acked_ids.extend(id);
                }
                Err(message) if message == "refused" || message.contains("nothing of this call was applied") => {
                    log.refused = true;
                    assert_eq!(view(host), log.acked, "a refused call is rewound at once");
                    return log;
                }
                Err(message) => {
                    assert!(message.starts_with("journal_unavailable: "), "{message}");
                    assert!(message.contains("unknown"), "{message}");
                    log.unknown = Some(view(host));
                    return log;
                }
            }
        }
    }
    log
}

/// The GERMINATE record of every active seed with a blueprint in the
/// last snapshot or after it is somewhere in `records`.
fn germinations_kept(records: &[JournalRecord]) -> Result<(), String> {
    let germinated: BTreeSet<String> = records
        .iter()
        .filter_map(|r| match r {
            JournalRecord::CommandAccepted { command, .. } => match &command.payload {
                CommandPayload::Seed(sc) if sc.operation == SeedOperation::Germinate => {
                    Some(command.target_seed_id.clone())
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    let start = replay_start(records);
    if let Some(JournalRecord::Snapshot { seeds, .. }) = records.get(start) {
        for s in seeds.iter().filter(|s| s.stage.is_active() && s.blueprint_id.is_some()) {
            if !germinated.contains(&s.seed_id) {
                return Err(format!("{} is {} but its GERMINATE record is gone", s.seed_id, s.stage));
            }
        }
    }
    Ok(())
}

/// One cut: run until the op, restart, check. Returns what the call in
/// flight ended as.
fn cut_at(op: u64, how: PowerCut, what: &str) -> &'static str {
    let d = SimDaemon::new(config());
    d.disk.cut_at_op(op, how);
    // A cut during start-up fails the start: nothing was acknowledged.
    let (log, started) = match d.try_start() {
        Ok((host, _)) => (workload(&d, &host, &mut Vec::new()), true),
        Err(_) => (Log::default(), false),
    };
    assert!(d.disk.is_down(), "cut at op {op} fired");
    d.disk.restart();
    let context = format!("cut at op {op} ({how:?}) during {what}");
    // What a restart reads, checked before the restart writes its own base.
    let (journal, entries, _) = DecisionJournal::open_on(d.disk.shared(), journal_dir(), config())
        .unwrap_or_else(|e| panic!("{context}: journal does not reopen: {e}"));
    drop(journal);
    let records: Vec<JournalRecord> = entries.into_iter().map(|e| e.record).collect();
    germinations_kept(&records).unwrap_or_else(|e| panic!("{context}: {e}"));
    let (host, report) = d.start();
    let restored = view(&host);
    let matches_unknown = log.unknown.as_ref() == Some(&restored);
    assert!(
        restored == log.acked || matches_unknown,
        "{context}: restored state is neither the acknowledged one nor (after an unknown outcome) the one in flight\nrestored {restored:?}\nacked    {:?}\nreport {report}",
        log.acked
    );
    for id in &log.acked_ids {
        let call = plan().into_iter().find(|c| matches!(c, Call::Command(i, ..) | Call::Pause(i, ..) if i == id));
        let replay = host.submit_command(signed(&call.unwrap()).unwrap()).unwrap();
        assert_eq!(replay.reason, Some(ReasonCode::NonceReplayed), "{context}: {id} re-sent: {replay:?}");
    }
    if !started {
        "start-up failed"
    } else if log.refused {
        "refused"
    } else if log.unknown.is_some() {
        if matches_unknown { "unknown, durable" } else { "unknown, not durable" }
    } else {
        "acknowledged"
    }
}

#[test]
fn a_power_cut_under_the_daemon_loses_no_acknowledged_call() {
    let started = std::time::Instant::now();
    // Dry run: how many ops, and which belong to a compaction or a rotation.
    let d = SimDaemon::new(config());
    let (host, _) = d.start();
    let mut ranges = Vec::new();
    let log = workload(&d, &host, &mut ranges);
    assert!(!log.refused && log.unknown.is_none(), "the workload runs clean without cuts");
    let stats = host.recorder().unwrap().stats();
    let compactions = stats.compactions.load(std::sync::atomic::Ordering::Relaxed);
    let appends = stats.appends.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        compactions >= 2,
        "the workload compacts: {compactions} ({appends} appends, {} bytes on disk)",
        d.disk.used_bytes()
    );
    let total = d.disk.stats().ops;
    drop(host);
    let all = std::env::var("KASMINA_POWER_CUT_ALL").is_ok_and(|v| v == "1");
    let mut points: BTreeSet<u64> =
        if all { (1..=total).collect() } else { (1..=total).step_by((total / 20).max(1) as usize).collect() };
    // Every op of the first compaction.
    if let Some((a, b, _)) = ranges.iter().find(|r| r.2.contains("(compaction)")) {
        points.extend(*a..=*b);
    }
    let mut tally = std::collections::BTreeMap::<&str, u32>::new();
    for (i, op) in points.iter().enumerate() {
        let what = ranges.iter().find(|(a, b, _)| (*a..=*b).contains(op)).map_or("start-up", |r| r.2.as_str());
        let how = if i % 2 == 0 { PowerCut::DropUnsynced } else { PowerCut::Torn { seed: *op } };
        *tally.entry(cut_at(*op, how, what)).or_default() += 1;
    }
    println!(
        "{} power cuts over {total} ops ({compactions} compactions in the workload): {tally:?}, 0 acknowledged calls lost, {:?}",
        points.len(),
        started.elapsed()
    );
}
