//! Disk faults under the decision journal: the disk fills up, writes fail,
//! fsyncs fail. Commands are refused `journal_unavailable` and never
//! acknowledged, nothing a refused command did stays visible, the daemon
//! keeps serving reads, and once the fault is gone (and the bounded retry
//! interval has passed) it takes commands again; a restart — after a power
//! cut, which keeps only what was synced — yields exactly the acknowledged
//! commands.
//!
//! Two ways in:
//! - the storage seam (`SimStorage`, in-process, the real embedded host):
//!   a capacity (ENOSPC after writing what fits), failing writes (EIO),
//!   failing fsyncs (EIO), each run through the same script;
//! - a real full file system: the real `kasmina serve` with its journal on
//!   a 256 KiB tmpfs this test mounts and removes (needs CAP_SYS_ADMIN,
//!   i.e. root; without it the test says so and passes without running).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kasmina_client::{ClientSettings, DaemonClient};
use kasmina_daemon::recorder::JOURNAL_RETRY_INTERVAL_MS;
use kasmina_journal::storage::sim::{Faults, PowerCut};
use kasmina_journal::{JournalConfig, decision_journal_config};
use leyline::api::KasminaApi;
use leyline::protocol::Role;
use leyline::{AdaptationCommand, BlendMode, ReasonCode, SeedOperation, SeedStage};
use support::daemon_process::{Daemon, DaemonFiles};
use support::sim_disk::{SeedView, SimDaemon, view};
use support::{command, pause, registration};

/// What each seed goes through: GERMINATE, PAUSE, RESUME, CULL.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Dormant,
    Germinated,
    Paused,
    Resumed,
    Embargoed,
}

/// A command stream over the four registered seeds and the state it
/// should leave.
struct Plan {
    phases: Vec<Phase>,
    n: usize,
    tag: &'static str,
    acked: Vec<AdaptationCommand>,
}

impl Plan {
    fn new(tag: &'static str) -> Self {
        Plan { phases: vec![Phase::Dormant; 4], n: 0, tag, acked: Vec::new() }
    }

    /// The next command (a fresh id each time) and the seed phase it leads to.
    fn next(&mut self) -> (AdaptationCommand, usize, Phase) {
        self.n += 1;
        let id = format!("{}-{}", self.tag, self.n);
        let (i, phase) = self.phases.iter().enumerate().find(|(_, p)| **p != Phase::Embargoed).expect("plan not done");
        let seed = format!("hidden-{i}");
        match phase {
            Phase::Dormant => (command(&id, &seed, SeedOperation::Germinate, true), i, Phase::Germinated),
            Phase::Germinated => (pause(&id, &seed, false), i, Phase::Paused),
            Phase::Paused => (pause(&id, &seed, true), i, Phase::Resumed),
            Phase::Resumed => (command(&id, &seed, SeedOperation::Cull, true), i, Phase::Embargoed),
            Phase::Embargoed => unreachable!(),
        }
    }

    /// Sends the next command; on acceptance, moves the model.
    fn send(&mut self, api: &dyn KasminaApi) -> Result<leyline::Outcome, leyline::api::ApiError> {
        let (cmd, i, next) = self.next();
        let answer = api.submit_command(cmd.clone());
        if answer.as_ref().is_ok_and(|o| o.accepted) {
            self.phases[i] = next;
            self.acked.push(cmd);
        }
        answer
    }

    fn expected(&self) -> Vec<SeedView> {
        self.phases
            .iter()
            .enumerate()
            .map(|(i, phase)| {
                let (stage, paused) = match phase {
                    Phase::Dormant => (SeedStage::Dormant, false),
                    Phase::Germinated | Phase::Resumed => (SeedStage::Germinated, false),
                    Phase::Paused => (SeedStage::Germinated, true),
                    Phase::Embargoed => (SeedStage::Embargoed, false),
                };
                let germinated = *phase != Phase::Dormant;
                SeedView {
                    seed_id: format!("hidden-{i}"),
                    stage,
                    blueprint_id: germinated.then(|| support::BLUEPRINT.to_owned()),
                    paused,
                    blend_mode: germinated.then_some(BlendMode::Residual),
                }
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    DiskFull,
    FailingWrites,
    FailingSyncs,
}

fn small() -> JournalConfig {
    JournalConfig { segment_bytes: 4 * 1024, compact_after_bytes: 12 * 1024, ..decision_journal_config() }
}

/// The value of an unlabelled sample in a Prometheus text exposition; a
/// missing sample fails the test (so a check on it cannot pass vacuously).
fn metric(exposition: &str, name: &str) -> f64 {
    let line = exposition.lines().find(|l| l.split_whitespace().next() == Some(name));
    let value = line.and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse().ok());
    value.unwrap_or_else(|| panic!("no sample {name} in:\n{exposition}"))
}

/// The script every seam fault goes through.
fn fault_then_recovery(fault: Fault) {
    let d = SimDaemon::new(small());
    let (host, _) = d.start();
    host.register_host(registration()).unwrap();
    let mut plan = Plan::new("ok");
    for _ in 0..3 {
        assert!(plan.send(&host).unwrap().accepted);
    }
    let acked = plan.expected();
    assert_eq!(view(&host), acked);

    d.disk.set_faults(match fault {
        // Less room than any command record needs.
        Fault::DiskFull => Faults { capacity: Some(d.disk.used_bytes() + 64), ..Faults::default() },
        Fault::FailingWrites => Faults { fail_writes: true, ..Faults::default() },
        Fault::FailingSyncs => Faults { fail_syncs: true, ..Faults::default() },
    });
    let mut plan_in_fault = Plan::new("fault");
    plan_in_fault.phases = plan.phases.clone();
    // The command the fault hits.
    match plan_in_fault.send(&host) {
        Ok(o) => {
            assert_eq!(o.reason, Some(ReasonCode::JournalUnavailable), "{fault:?}: {o:?}");
            assert!(!o.accepted);
            assert_eq!(view(&host), acked, "{fault:?}: the refused command was rewound at once");
        }
        Err(e) => {
            // A failed fsync cannot even be cut durably: the answer says the
            // outcome is unknown, like a call in flight at a crash.
            assert_eq!(fault, Fault::FailingSyncs, "{e:?}");
            assert!(e.message.starts_with("journal_unavailable: ") && e.message.contains("unknown"), "{e:?}");
        }
    }
    // While the fault lasts: each command is refused whole (each also
    // retries the journal once the interval has passed, in vain).
    for _ in 0..3 {
        d.clock.advance_ms(JOURNAL_RETRY_INTERVAL_MS);
        let o = plan_in_fault.send(&host).unwrap();
        assert_eq!(o.reason, Some(ReasonCode::JournalUnavailable), "{fault:?}: {o:?}");
        let detail = o.attributes.get("detail").map(String::as_str).unwrap_or_default();
        assert!(detail.contains("nothing of this call was applied"), "{fault:?}: {o:?}");
    }
    let err = host.step_report(support::step(1)).unwrap_err();
    assert_eq!(err.code, leyline::api::ApiErrorCode::JournalUnavailable, "{err:?}");
    assert!(err.message.starts_with("journal_unavailable: "), "{err:?}");
    host.status().unwrap();
    // An operator sees it in /metrics.
    let metrics = kasmina_daemon::metrics::render(&host);
    assert!(metrics.contains("kasmina_journal_healthy 0"), "{fault:?}: {metrics}");
    assert!(metric(&metrics, "kasmina_journal_failures_total") >= 1.0, "{fault:?}: {metrics}");
    if fault != Fault::FailingSyncs {
        assert_eq!(view(&host), acked, "{fault:?}: nothing refused is visible");
    }

    // The fault is gone, but the last attempt was just now: still refused.
    d.disk.set_faults(Faults::default());
    let o = plan_in_fault.send(&host).unwrap();
    assert_eq!(o.reason, Some(ReasonCode::JournalUnavailable), "bounded retry: {o:?}");
    d.clock.advance_ms(JOURNAL_RETRY_INTERVAL_MS);
    assert_eq!(view(&host).len(), 4);
    for _ in 0..4 {
        let o = plan.send(&host).unwrap();
        assert!(o.accepted, "{fault:?}: accepted again after recovery: {o:?}");
    }
    assert_eq!(view(&host), plan.expected(), "{fault:?}: only acknowledged commands count");
    let stats = host.recorder().unwrap().stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(load(&stats.recoveries), 1, "{fault:?}");
    assert!(load(&stats.failures) >= 1, "{fault:?}");
    let metrics = kasmina_daemon::metrics::render(&host);
    for line in ["kasmina_journal_healthy 1", "kasmina_journal_recoveries_total 1"] {
        assert!(metrics.contains(line), "{fault:?}: {line} not in {metrics}");
    }
    assert!(metrics.contains("kasmina_journal_discarded_records_total"), "{fault:?}: {metrics}");
    drop(host);

    // Restart after a power cut: exactly the acknowledged commands.
    d.disk.power_cut(PowerCut::DropUnsynced);
    let (host, report) = d.start();
    assert_eq!(view(&host), plan.expected(), "{fault:?}: {report}");
    for cmd in &plan.acked {
        let replay = host.submit_command(cmd.clone()).unwrap();
        assert_eq!(replay.reason, Some(ReasonCode::NonceReplayed), "{fault:?}: {replay:?}");
    }
}

#[test]
fn a_full_disk_refuses_commands_and_recovers_when_space_returns() {
    fault_then_recovery(Fault::DiskFull);
}

#[test]
fn failing_writes_refuse_commands_and_recover() {
    fault_then_recovery(Fault::FailingWrites);
}

#[test]
fn failing_fsyncs_refuse_commands_and_recover() {
    fault_then_recovery(Fault::FailingSyncs);
}

/// A tmpfs of `size` mounted at `at` for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "kasmina-test"])
            .arg(at)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(Tmpfs(at.to_owned()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the file system says ENOSPC.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = [0u8; 4096];
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
    written
}

#[test]
fn a_real_full_filesystem_refuses_commands_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("tmpfs");
    let tmpfs = match Tmpfs::mount(&mnt, "256k") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a tmpfs here ({why}); the seam tests above cover the same script");
            return;
        }
    };
    let mut files = DaemonFiles::create(dir.path()).with_patient_plugins();
    files.journal = mnt.join("journal");
    let args = ["--journal-segment-bytes", "16384", "--journal-compact-bytes", "65536"];
    let daemon = Daemon::start(&files, &args);
    let connect =
        |role| DaemonClient::connect_unix(&files.socket, role, "disk-full", ClientSettings::default()).unwrap();
    connect(Role::Trainer).register_host(registration()).unwrap();
    let controller = connect(Role::Controller);
    let observer = connect(Role::Observer);
    let mut plan = Plan::new("fs");
    for _ in 0..2 {
        assert!(plan.send(&controller).unwrap().accepted);
    }
    let filler = mnt.join("filler");
    let filled = fill(&filler);
    // Until the page the journal writes into is full, a record may still fit.
    let mut refused = 0;
    let mut sent = 0;
    while refused < 3 {
        sent += 1;
        assert!(sent < 200, "the full file system never refused a command");
        let o = plan.send(&controller).unwrap();
        if !o.accepted {
            assert_eq!(o.reason, Some(ReasonCode::JournalUnavailable), "{o:?}");
            refused += 1;
        }
        assert_eq!(view(&observer), plan.expected(), "only acknowledged commands are visible");
    }
    observer.status().unwrap();
    std::fs::remove_file(&filler).unwrap();
    // The daemon retries at most every JOURNAL_RETRY_INTERVAL_MS of its own clock.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let o = plan.send(&controller).unwrap();
        if o.accepted {
            break;
        }
        assert_eq!(o.reason, Some(ReasonCode::JournalUnavailable), "{o:?}");
        assert!(Instant::now() < deadline, "no command accepted after space returned");
        std::thread::sleep(Duration::from_millis(JOURNAL_RETRY_INTERVAL_MS / 5));
    }
    for _ in 0..2 {
        assert!(plan.send(&controller).unwrap().accepted);
    }
    assert_eq!(view(&observer), plan.expected());
    drop((controller, observer));
    daemon.kill();
    let daemon = Daemon::start(&files, &args);
    let controller = connect(Role::Controller);
    assert_eq!(view(&connect(Role::Observer)), plan.expected(), "{}", daemon.start_report);
    for cmd in &plan.acked {
        assert_eq!(controller.submit_command(cmd.clone()).unwrap().reason, Some(ReasonCode::NonceReplayed));
    }
    println!(
        "tmpfs 256 KiB filled with {filled} bytes: {refused} commands refused journal_unavailable, {} acknowledged and restored",
        plan.acked.len()
    );
    drop(controller);
    assert!(daemon.terminate().success());
    drop(tmpfs);
}
