//! Group commit in the daemon's journal: calls applied while another
//! call's fsync runs share the next fsync instead of queueing one each, and
//! a failed shared fsync refuses every call that waited on it — none is
//! acknowledged, none stays visible, none survives a restart.
//!
//! The journal is on the simulated disk (`SimStorage`) behind a gate that
//! holds the detached fsyncs the group commit runs, so the test decides
//! which calls are in flight while one runs. Everything else is real.
//!
//! Power cuts while four controllers submit at once check what group
//! commit could break: a call answered before an fsync covered it. Each
//! cut lands at a random disk operation of the concurrent workload; after
//! the restart every acknowledged command's effect is there and its id is
//! refused `nonce_replayed`, and no command refused as not applied is.
//! `KASMINA_GROUP_COMMIT_CUTS=N` sets the number of cuts (default 40).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use kasmina_daemon::DaemonHost;
use kasmina_journal::storage::sim::{PowerCut, SimStorage};
use kasmina_journal::storage::wrap::WrapFiles;
use kasmina_journal::{DataSync, StorageFile, decision_journal_config};
use leyline::api::{HostRegistration, KasminaApi, SiteSpec, SlotSpec};
use leyline::{Dim, ReasonCode, SeedOperation, SeedStage};
use support::command;
use support::sim_disk::SimDaemon;

/// Holds detached fsyncs while closed; can fail the next one.
#[derive(Debug, Default)]
struct Gate {
    /// (closed, fsyncs that reached the gate)
    state: Mutex<(bool, u32)>,
    changed: Condvar,
    fail_next: AtomicBool,
}

impl Gate {
    fn set_closed(&self, closed: bool) {
        self.state.lock().unwrap().0 = closed;
        self.changed.notify_all();
    }

    fn wait_entered(&self, n: u32) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut state = self.state.lock().unwrap();
        while state.1 < n {
            assert!(Instant::now() < deadline, "no fsync reached the gate");
            state = self.changed.wait_timeout(state, Duration::from_millis(50)).unwrap().0;
        }
    }

    fn pass(&self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.1 += 1;
        self.changed.notify_all();
        while state.0 {
            state = self.changed.wait(state).unwrap();
        }
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(io::Error::other("injected: fsync failed"));
        }
        Ok(())
    }
}

/// A file of the simulated disk with its detached fsyncs behind the gate.
#[derive(Debug)]
struct GatedFile {
    inner: Box<dyn StorageFile>,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GatedSync {
    inner: Arc<dyn DataSync>,
    gate: Arc<Gate>,
}

impl DataSync for GatedSync {
    fn sync_data(&self) -> io::Result<()> {
        self.gate.pass()?;
        self.inner.sync_data()
    }
}

impl StorageFile for GatedFile {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.append(bytes)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn sync_all(&mut self) -> io::Result<()> {
        self.inner.sync_all()
    }
    fn data_sync(&self) -> Arc<dyn DataSync> {
        Arc::new(GatedSync { inner: self.inner.data_sync(), gate: Arc::clone(&self.gate) })
    }
}

const SEEDS: usize = THREADS * SEEDS_PER_THREAD;

struct Setup {
    sim: SimDaemon,
    gate: Arc<Gate>,
}

const SEEDS_PER_THREAD: usize = 6;
const THREADS: usize = 4;

impl Setup {
    fn new() -> Self {
        Setup { sim: SimDaemon::new(decision_journal_config()), gate: Arc::default() }
    }

    fn start(&self) -> DaemonHost {
        self.try_start().unwrap()
    }

    /// The daemon on the simulated disk, its files' detached fsyncs behind
    /// the gate.
    fn try_start(&self) -> Result<DaemonHost, kasmina_daemon::StartError> {
        let gate = Arc::clone(&self.gate);
        let storage =
            WrapFiles::new(self.sim.disk.shared(), move |inner| Box::new(GatedFile { inner, gate: Arc::clone(&gate) }));
        Ok(self.sim.try_start_on(Arc::new(storage))?.0)
    }
}

fn registration() -> HostRegistration {
    HostRegistration::new(
        support::RUN,
        vec![SiteSpec { name: "hidden".to_owned(), feature_shape: vec![Dim::Batch, Dim::Fixed(64)] }],
        (0..SEEDS).map(|i| SlotSpec { seed_id: format!("hidden-{i}"), site: "hidden".to_owned() }).collect(),
    )
}

fn germinate(tag: &str, seed: usize) -> leyline::AdaptationCommand {
    command(&format!("{tag}-{seed}"), &format!("hidden-{seed}"), SeedOperation::Germinate, true)
}

fn syncs(host: &DaemonHost) -> u64 {
    host.recorder().unwrap().stats().syncs.load(Ordering::Relaxed)
}

fn appends(host: &DaemonHost) -> u64 {
    host.recorder().unwrap().stats().appends.load(Ordering::Relaxed)
}

fn stages(host: &DaemonHost) -> Vec<SeedStage> {
    let mut states = host.seed_states().unwrap();
    states.sort_by_key(|s| s.seed_id.trim_start_matches("hidden-").parse::<usize>().unwrap());
    states.into_iter().map(|s| s.stage).collect()
}

/// Holds call A's fsync at the gate, then applies B and C on other
/// threads and waits until both have appended their records (and had
/// time to finish their calls), so they wait for a later fsync.
fn hold_a_then_apply_b_and_c<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    setup: &Setup,
    host: &'s DaemonHost,
) -> Vec<std::thread::ScopedJoinHandle<'s, Result<leyline::Outcome, leyline::api::ApiError>>> {
    setup.gate.set_closed(true);
    let entered = setup.gate.state.lock().unwrap().1;
    let before = appends(host);
    let a = scope.spawn(move || host.submit_command(germinate("a", 0)));
    setup.gate.wait_entered(entered + 1);
    let b = scope.spawn(move || host.submit_command(germinate("b", 1)));
    let c = scope.spawn(move || host.submit_command(germinate("c", 2)));
    let deadline = Instant::now() + Duration::from_secs(60);
    while appends(host) < before + 3 {
        assert!(Instant::now() < deadline, "B and C never appended their records");
        std::thread::sleep(Duration::from_millis(5));
    }
    // From their last append to the end of their calls is a few
    // instructions; on two loaded cores give it time.
    std::thread::sleep(Duration::from_millis(300));
    vec![a, b, c]
}

#[test]
fn calls_applied_during_an_fsync_share_the_next_one() {
    let setup = Setup::new();
    let host = setup.start();
    host.register_host(registration()).unwrap();

    // Control: one caller at a time costs one fsync per command (what the
    // shared count below is compared with).
    let before = syncs(&host);
    for seed in 5..8 {
        assert!(host.submit_command(germinate("solo", seed)).unwrap().accepted);
    }
    assert_eq!(syncs(&host) - before, 3, "one caller: one fsync per acknowledged command");

    let before = syncs(&host);
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let calls = hold_a_then_apply_b_and_c(s, &setup, &host);
        setup.gate.set_closed(false);
        calls.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    for o in &outcomes {
        assert!(o.accepted, "{o:?}");
    }
    // A's fsync was taken before B and C finished; the next covered both.
    assert_eq!(syncs(&host) - before, 2, "B and C shared one fsync");
    drop(host);

    // What was acknowledged is durable: a power cut keeps all six.
    setup.sim.disk.power_cut(PowerCut::DropUnsynced);
    setup.sim.disk.restart();
    let host = setup.start();
    let germinated = stages(&host).iter().filter(|s| **s == SeedStage::Germinated).count();
    assert_eq!(germinated, 6, "{:?}", stages(&host));
}

#[test]
fn a_failed_shared_fsync_refuses_every_call_that_waited_on_it() {
    let setup = Setup::new();
    let host = setup.start();
    host.register_host(registration()).unwrap();
    assert!(host.submit_command(germinate("ok", 7)).unwrap().accepted);

    setup.gate.fail_next.store(true, Ordering::SeqCst);
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let calls = hold_a_then_apply_b_and_c(s, &setup, &host);
        setup.gate.set_closed(false);
        calls.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    for o in &outcomes {
        assert!(!o.accepted, "{o:?}");
        assert_eq!(o.reason, Some(ReasonCode::JournalUnavailable), "{o:?}");
        let detail = o.attributes.get("detail").map(String::as_str).unwrap_or_default();
        assert!(detail.contains("nothing of this call was applied"), "{o:?}");
    }
    // Rewound at once: only the command acknowledged before.
    let expect: Vec<SeedStage> =
        (0..SEEDS).map(|i| if i == 7 { SeedStage::Germinated } else { SeedStage::Dormant }).collect();
    assert_eq!(stages(&host), expect);
    // The journal recovered with the refusal: the next command is taken.
    assert!(host.submit_command(germinate("after", 3)).unwrap().accepted);
    drop(host);

    setup.sim.disk.power_cut(PowerCut::DropUnsynced);
    setup.sim.disk.restart();
    let host = setup.start();
    let mut expect = expect;
    expect[3] = SeedStage::Germinated;
    assert_eq!(stages(&host), expect, "exactly the acknowledged commands after a restart");
}

/// What one controller thread saw.
#[derive(Debug, Default)]
struct Seen {
    /// Accepted: (seed, operation).
    acked: Vec<(usize, leyline::AdaptationCommand)>,
    /// Refused as not applied (`journal_unavailable`, "nothing of this
    /// call was applied").
    refused: Vec<(usize, leyline::AdaptationCommand)>,
}

/// Four threads, each GERMINATE then PAUSE of its own seeds, until the
/// first answer that is not an acceptance (the disk lost power).
fn concurrent_workload(host: &DaemonHost, tag: &str) -> Vec<Seen> {
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                s.spawn(move || {
                    let mut seen = Seen::default();
                    let seeds = (t * SEEDS_PER_THREAD)..((t + 1) * SEEDS_PER_THREAD);
                    let commands = seeds.clone().map(|i| (i, germinate(tag, i))).chain(seeds.map(|i| {
                        let cmd = support::pause(&format!("{tag}-pause-{i}"), &format!("hidden-{i}"), false);
                        (i, cmd)
                    }));
                    for (seed, cmd) in commands {
                        match host.submit_command(cmd.clone()) {
                            Ok(o) if o.accepted => seen.acked.push((seed, cmd)),
                            Ok(o) => {
                                assert_eq!(o.reason, Some(ReasonCode::JournalUnavailable), "{o:?}");
                                let detail = o.attributes.get("detail").map(String::as_str).unwrap_or_default();
                                if detail.contains("nothing of this call was applied") {
                                    seen.refused.push((seed, cmd));
                                }
                                break;
                            }
                            // Outcome unknown (the journal could not even be
                            // cut): either state may come back.
                            Err(_) => break,
                        }
                    }
                    seen
                })
            })
            .collect();
        threads.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn is_pause(cmd: &leyline::AdaptationCommand) -> bool {
    matches!(cmd.payload, leyline::CommandPayload::Pause(_))
}

#[test]
fn power_cuts_during_concurrent_commands_lose_no_acknowledged_one() {
    use rand::{Rng, SeedableRng};
    let cuts: u64 = std::env::var("KASMINA_GROUP_COMMIT_CUTS").ok().and_then(|v| v.parse().ok()).unwrap_or(40);
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x9c0_ffee);
    let mut setup = Setup::new();

    // Dry run: how many disk operations the workload makes.
    let host = setup.start();
    host.register_host(registration()).unwrap();
    let base = setup.sim.disk.stats().ops;
    let seen = concurrent_workload(&host, "dry");
    assert_eq!(seen.iter().map(|s| s.acked.len()).sum::<usize>(), 2 * SEEDS, "{seen:?}");
    let span = setup.sim.disk.stats().ops - base;
    drop(host);

    let (mut acked_total, mut shared) = (0, 0);
    for round in 0..cuts {
        setup.sim.disk = SimStorage::new();
        let host = setup.start();
        host.register_host(registration()).unwrap();
        let (syncs_before, base) = (syncs(&host), setup.sim.disk.stats().ops);
        let at = base + rng.gen_range(1..=span);
        let how = if round % 2 == 0 { PowerCut::DropUnsynced } else { PowerCut::Torn { seed: round } };
        setup.sim.disk.cut_at_op(at, how);
        let seen = concurrent_workload(&host, &format!("r{round}"));
        let acked: Vec<_> = seen.iter().flat_map(|s| s.acked.iter()).collect();
        acked_total += acked.len();
        shared += acked.len().saturating_sub(usize::try_from(syncs(&host) - syncs_before).unwrap());
        drop(host);
        setup.sim.disk.restart();
        let context = format!("round {round}: cut at op {at} ({how:?}), {} acknowledged", acked.len());
        let host = setup.try_start().unwrap_or_else(|e| panic!("{context}: restart failed: {e}"));
        let states: std::collections::BTreeMap<String, leyline::SeedState> =
            host.seed_states().unwrap().into_iter().map(|s| (s.seed_id.clone(), s)).collect();
        for (seed, cmd) in &acked {
            let state = &states[&format!("hidden-{seed}")];
            let kept = if is_pause(cmd) { state.paused } else { state.stage == SeedStage::Germinated };
            assert!(kept, "{context}: acknowledged {} lost: {state:?}", cmd.command_id);
            let again = host.submit_command((*cmd).clone()).unwrap();
            assert_eq!(again.reason, Some(ReasonCode::NonceReplayed), "{context}: {again:?}");
        }
        for (seed, cmd) in seen.iter().flat_map(|s| s.refused.iter()) {
            let state = &states[&format!("hidden-{seed}")];
            let resurrected = if is_pause(cmd) { state.paused } else { state.stage != SeedStage::Dormant };
            assert!(!resurrected, "{context}: refused {} came back: {state:?}", cmd.command_id);
        }
    }
    println!(
        "{cuts} power cuts during 4 concurrent controllers: {acked_total} acknowledged commands, 0 lost; \
         {shared} answered by an fsync another call ran"
    );
}
