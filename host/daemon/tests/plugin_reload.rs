//! Issue 19, item 8: plugin faults under load. The real `kasmina serve`
//! runs with a settings file while a controller submits a steady stream of
//! signed commands and a trainer steps seeds through their gates. The test
//! rewrites `[plugins.gates]` to point at each fault fixture in turn (with
//! its correct SHA-256) and sends SIGHUP:
//! - each reload is refused by the canary, with the fixture's reason in
//!   the `kasmina.plugin.reload_refused` event, and the event names the
//!   default plugin as the one still serving;
//! - gates keep deciding between reloads (a new verdict after every
//!   refusal), as the default decides (no plugin failure, no verdict of the
//!   strict example gate);
//! - a changed file (wrong pin) and a settings file that no longer parses
//!   are refused too, changing nothing;
//! - then valid reloads are accepted and start deciding: the strict example
//!   gate (`kasmina.plugin.reloaded` naming old and new SHA-256, and its own
//!   G2 verdict `unstable`, never seen before it), the 0.1.0 default, and
//!   the embedded default again when the section is removed; a changed
//!   `[lifecycle]` is named as needing a restart;
//! - every command sent got an outcome, every accepted one is in the
//!   journal and no refused one is (0 lost).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kasmina_client::{ClientSettings, DaemonClient};
use kasmina_plugin_artifacts as artifacts;
use leyline::api::{HostRegistration, KasminaApi, SiteSpec, SlotSpec};
use leyline::journal::JournalRecord;
use leyline::protocol::Role;
use leyline::{Dim, SeedOperation, SeedStage, TelemetryEvent, TelemetryLevel};
use support::daemon_process::{Daemon, DaemonFiles};
use support::{RUN, SimTrainer, command};

/// Within the default gate's budget (300 µs in the test settings), over the
/// strict example gate's half budget: G2 tells the two plugins apart.
const LATENCY_US: u64 = 200;
const SLOTS: usize = 12;

/// A fault fixture and the reason its refusal must give.
struct Fault {
    name: &'static str,
    path: &'static str,
    sha256: &'static str,
    reason: &'static str,
}

const FAULTS: [Fault; 9] = [
    Fault {
        name: "loop",
        path: artifacts::FIXTURE_LOOP,
        sha256: artifacts::FIXTURE_LOOP_SHA256,
        reason: "plugin_timeout",
    },
    Fault {
        name: "alloc",
        path: artifacts::FIXTURE_ALLOC,
        sha256: artifacts::FIXTURE_ALLOC_SHA256,
        reason: "plugin_oom",
    },
    Fault {
        name: "panic",
        path: artifacts::FIXTURE_PANIC,
        sha256: artifacts::FIXTURE_PANIC_SHA256,
        reason: "plugin_trap",
    },
    Fault {
        name: "stack",
        path: artifacts::FIXTURE_STACK,
        sha256: artifacts::FIXTURE_STACK_SHA256,
        reason: "plugin_trap",
    },
    Fault {
        name: "huge-reason",
        path: artifacts::FIXTURE_HUGE_REASON,
        sha256: artifacts::FIXTURE_HUGE_REASON_SHA256,
        reason: "output-caps: plugin_bad_output",
    },
    Fault {
        name: "many-attributes",
        path: artifacts::FIXTURE_MANY_ATTRIBUTES,
        sha256: artifacts::FIXTURE_MANY_ATTRIBUTES_SHA256,
        reason: "output-caps: plugin_bad_output",
    },
    Fault {
        name: "wrong-version",
        path: artifacts::FIXTURE_WRONG_VERSION,
        sha256: artifacts::FIXTURE_WRONG_VERSION_SHA256,
        reason: "plugin_version_mismatch",
    },
    Fault {
        name: "lying-gate",
        path: artifacts::FIXTURE_LYING_GATE,
        sha256: artifacts::FIXTURE_LYING_GATE_SHA256,
        reason: "safety-invariants",
    },
    Fault { name: "clock", path: artifacts::FIXTURE_CLOCK, sha256: artifacts::FIXTURE_CLOCK_SHA256, reason: "imports" },
];

/// The settings file: `base` plus a `[plugins.gates]` ref when given.
fn write_settings(files: &DaemonFiles, base: &str, gates: Option<(&str, &str)>) {
    let mut text = base.to_owned();
    if let Some((path, sha256)) = gates {
        text.push_str(&format!("\n[plugins.gates]\npath = {path:?}\nsha256 = {sha256:?}\n"));
    }
    std::fs::write(&files.settings, text).unwrap();
}

fn attr(e: &TelemetryEvent, key: &str) -> String {
    e.attributes.get(key).map(ToString::to_string).unwrap_or_default()
}

/// Every plugin and gate-verdict event the daemon pushes, in order.
struct Events(Arc<Mutex<Vec<TelemetryEvent>>>);

impl Events {
    fn follow(socket: &Path) -> Events {
        let client =
            DaemonClient::connect_unix(socket, Role::Observer, "reload-test", ClientSettings::default()).unwrap();
        let stream = client.subscribe_telemetry(TelemetryLevel::Info).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for event in stream.map_while(Result::ok) {
                if event.name.starts_with("kasmina.plugin.") || event.name == "kasmina.gate.verdict" {
                    sink.lock().unwrap().push(event);
                }
            }
        });
        Events(log)
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    fn since(&self, from: usize) -> Vec<TelemetryEvent> {
        self.0.lock().unwrap()[from..].to_vec()
    }

    /// The first event at or after `from` that `pred` accepts, with its index.
    fn wait(&self, from: usize, what: &str, pred: impl Fn(&TelemetryEvent) -> bool) -> (usize, TelemetryEvent) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = self
                .0
                .lock()
                .unwrap()
                .iter()
                .enumerate()
                .skip(from)
                .find(|(_, e)| pred(e))
                .map(|(i, e)| (i, e.clone()));
            if let Some(found) = found {
                return found;
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = self
                    .since(from)
                    .iter()
                    .filter(|e| e.name.starts_with("kasmina.plugin."))
                    .map(|e| format!("{}: {}", e.name, e.message))
                    .collect();
                panic!("no {what} within 60 s; plugin events since: {seen:#?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// What the load thread saw: every command sent with its outcome.
#[derive(Debug, Default)]
struct LoadTally {
    /// (command id, accepted) for every command answered.
    commands: Vec<(String, bool)>,
    /// Calls that got no answer (must stay empty).
    errors: Vec<String>,
    steps: u64,
}

fn registration() -> HostRegistration {
    HostRegistration::new(
        RUN,
        vec![SiteSpec { name: "hidden".to_owned(), feature_shape: vec![Dim::Batch, Dim::Fixed(64)] }],
        (0..SLOTS).map(|i| SlotSpec { seed_id: format!("r-{i:02}"), site: "hidden".to_owned() }).collect(),
    )
}

/// Controller and trainer: a step report every round, and a command —
/// GERMINATE a DORMANT seed, or CULL one that got through G2 and G3 (a
/// one-second embargo brings its slot back) — whenever there is one to send.
fn load(socket: PathBuf, stop: Arc<AtomicBool>) -> LoadTally {
    let connect = |role| DaemonClient::connect_unix(&socket, role, "reload-load", ClientSettings::default()).unwrap();
    let (controller, trainer_conn) = (connect(Role::Controller), connect(Role::Trainer));
    let mut trainer = SimTrainer::new(LATENCY_US);
    trainer_conn.register_host(registration()).unwrap();
    let mut tally = LoadTally::default();
    let mut round = 0u64;
    while !stop.load(Ordering::SeqCst) {
        round += 1;
        match trainer.try_step(&trainer_conn) {
            Ok(_) => tally.steps += 1,
            Err(err) => tally.errors.push(format!("step {}: {err}", trainer.step)),
        }
        let states = match controller.seed_states() {
            Ok(states) => states,
            Err(err) => {
                tally.errors.push(format!("seed states: {err}"));
                continue;
            }
        };
        let id = format!("load-{round}");
        let cmd = if let Some(s) = states.iter().find(|s| s.stage == SeedStage::Dormant) {
            command(&id, &s.seed_id, SeedOperation::Germinate, true)
        } else if let Some(s) =
            states.iter().find(|s| matches!(s.stage, SeedStage::Shadowing | SeedStage::Probationary))
        {
            command(&id, &s.seed_id, SeedOperation::Cull, true)
        } else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        match controller.submit_command(cmd) {
            Ok(outcome) => tally.commands.push((id, outcome.accepted)),
            Err(err) => tally.errors.push(format!("command {id}: {err}")),
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    tally
}

/// A SIGHUP that arrives while a reload runs (the loop fixture's canary
/// waits out its deadline) does not start a second one beside it: the
/// next reload starts only after the first finished, and re-reads the file.
fn one_reload_at_a_time(events: &Events, from: usize, daemon: &Daemon) {
    let is_started = |e: &TelemetryEvent| e.name == "kasmina.plugin.reload_started";
    let is_finished = |e: &TelemetryEvent| e.name == "kasmina.plugin.reload_finished";
    let (first, _) = events.wait(from, "first reload_started", is_started);
    // Sent once the first reload is known to run; its canary takes >= 250 ms.
    daemon.hangup();
    assert!(events.since(first).iter().all(|e| !is_finished(e)), "the first reload was still running");
    let (second, _) = events.wait(first + 1, "second reload_started", is_started);
    events.wait(second + 1, "second reload_finished", is_finished);
    let order: Vec<&str> = events
        .since(from)
        .iter()
        .filter(|e| is_started(e) || is_finished(e))
        .map(|e| if is_started(e) { "started" } else { "finished" })
        .collect();
    assert_eq!(order, ["started", "finished", "started", "finished"], "two reloads overlapped");
}

fn is_verdict(e: &TelemetryEvent) -> bool {
    e.name == "kasmina.gate.verdict"
}

#[test]
fn plugin_faults_under_load_are_refused_while_the_previous_plugin_keeps_serving() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let base =
        std::fs::read_to_string(&files.settings).unwrap().replace("[lifecycle]\n", "[lifecycle]\nembargo_s = 1\n");
    write_settings(&files, &base, None);
    let daemon = Daemon::start(&files, &[]);
    let marker = "gates <embedded kasmina-gates-plugin> sha256:";
    let at = daemon.start_report.find(marker).expect("the start report names the gate plugin") + marker.len();
    let default_prefix = daemon.start_report[at..at + 12].to_owned();
    let events = Events::follow(&files.socket);
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (socket, stop) = (files.socket.clone(), Arc::clone(&stop));
        std::thread::spawn(move || load(socket, stop))
    };
    events.wait(0, "gate verdict before any reload", is_verdict);

    // Each fault fixture, installed through SIGHUP while commands flow.
    let mut default_sha256: Option<String> = None;
    let mut timings = Vec::new();
    for fault in &FAULTS {
        let from = events.len();
        write_settings(&files, &base, Some((fault.path, fault.sha256)));
        let t0 = Instant::now();
        daemon.hangup();
        if fault.name == "loop" {
            one_reload_at_a_time(&events, from, &daemon);
        }
        let (i, refused) = events.wait(from, &format!("refusal of the {} fixture", fault.name), |e| {
            e.name == "kasmina.plugin.reload_refused" && attr(e, "new_sha256") == fault.sha256
        });
        timings.push((fault.name, t0.elapsed()));
        assert_eq!(refused.level, TelemetryLevel::Error, "{refused:?}");
        assert_eq!(attr(&refused, "slot"), "gates");
        let reason = attr(&refused, "reason");
        assert!(reason.contains(fault.reason), "{}: expected {:?} in the reason: {reason}", fault.name, fault.reason);
        let serving = attr(&refused, "old_sha256");
        assert!(serving.starts_with(&default_prefix), "{}: the default keeps serving: {serving}", fault.name);
        assert_eq!(default_sha256.get_or_insert(serving.clone()), &serving, "{}: the same plugin serves", fault.name);
        events.wait(i, "reload_finished", |e| e.name == "kasmina.plugin.reload_finished" && attr(e, "refused") == "1");
        events.wait(i, &format!("gate verdict after the {} refusal", fault.name), is_verdict);
    }
    let default_sha256 = default_sha256.unwrap();
    let fault_phase = events.since(0);
    let accepted: Vec<&TelemetryEvent> = fault_phase.iter().filter(|e| e.name == "kasmina.plugin.reloaded").collect();
    assert!(accepted.is_empty(), "no fault fixture may be swapped in: {accepted:?}");
    let verdicts: Vec<&TelemetryEvent> = fault_phase.iter().filter(|e| is_verdict(e)).collect();
    for v in &verdicts {
        let reason = attr(v, "reason");
        assert!(!reason.starts_with("plugin_") && reason != "unstable", "decided as the default decides: {v:?}");
        if attr(v, "gate") == "G2" {
            assert_eq!(attr(v, "passed"), "true", "the default passes G2 at {LATENCY_US} µs: {v:?}");
        }
    }
    assert!(verdicts.len() > FAULTS.len(), "gates kept deciding: {} verdicts", verdicts.len());

    // A changed file (wrong pin) and a file that no longer parses: refused.
    let from = events.len();
    write_settings(&files, &base, Some((artifacts::EXAMPLE_CUSTOM_GATE, artifacts::FIXTURE_LOOP_SHA256)));
    daemon.hangup();
    let (_, pin) = events.wait(from, "refusal of a wrong pin", |e| e.name == "kasmina.plugin.reload_refused");
    assert!(attr(&pin, "reason").contains("pins"), "{pin:?}");
    let from = events.len();
    std::fs::write(&files.settings, format!("{base}\n[plugins.gates]\npath = \"unterminated\n")).unwrap();
    daemon.hangup();
    let (_, bad) =
        events.wait(from, "refusal of a broken file", |e| e.name == "kasmina.plugin.reload_settings_refused");
    assert!(attr(&bad, "reason").contains("invalid settings"), "{bad:?}");
    assert!(
        events.since(from).iter().all(|e| e.name != "kasmina.plugin.reload_started"),
        "a broken file starts nothing"
    );

    // Valid: the strict example gate is accepted and starts deciding.
    let from = events.len();
    let unstable = |e: &TelemetryEvent| is_verdict(e) && attr(e, "reason") == "unstable";
    assert!(events.since(0).iter().all(|e| !unstable(e)), "no strict verdict before the strict gate serves");
    write_settings(
        &files,
        &base.replace("embargo_s = 1", "embargo_s = 2"),
        Some((artifacts::EXAMPLE_CUSTOM_GATE, artifacts::EXAMPLE_CUSTOM_GATE_SHA256)),
    );
    daemon.hangup();
    let (i, swapped) = events.wait(from, "acceptance of the example gate", |e| e.name == "kasmina.plugin.reloaded");
    assert_eq!(
        (attr(&swapped, "slot"), attr(&swapped, "old_sha256"), attr(&swapped, "new_sha256")),
        ("gates".to_owned(), default_sha256.clone(), artifacts::EXAMPLE_CUSTOM_GATE_SHA256.to_owned())
    );
    let (_, restart) =
        events.wait(from, "restart-required warning", |e| e.name == "kasmina.plugin.reload_restart_required");
    assert_eq!(attr(&restart, "keys"), "lifecycle", "{restart:?}");
    events.wait(i, "a G2 verdict of the strict example gate", unstable);

    // The frozen 0.1.0 default, then the embedded default (section removed).
    for (path, sha256, old) in [
        (
            Some(artifacts::FIXTURE_GATES_V0_1),
            artifacts::FIXTURE_GATES_V0_1_SHA256,
            artifacts::EXAMPLE_CUSTOM_GATE_SHA256,
        ),
        (None, default_sha256.as_str(), artifacts::FIXTURE_GATES_V0_1_SHA256),
    ] {
        let from = events.len();
        write_settings(&files, &base, path.map(|p| (p, sha256)));
        daemon.hangup();
        let (_, swapped) =
            events.wait(from, &format!("acceptance of {sha256}"), |e| e.name == "kasmina.plugin.reloaded");
        assert_eq!((attr(&swapped, "old_sha256"), attr(&swapped, "new_sha256")), (old.to_owned(), sha256.to_owned()));
    }
    let from = events.len();
    events.wait(from, "gate verdict after the last reload", is_verdict);

    stop.store(true, Ordering::SeqCst);
    let tally = load.join().unwrap();
    assert!(tally.errors.is_empty(), "every call got an answer: {:?}", tally.errors);
    let accepted: BTreeSet<&str> = tally.commands.iter().filter(|(_, a)| *a).map(|(id, _)| id.as_str()).collect();
    let refused: BTreeSet<&str> = tally.commands.iter().filter(|(_, a)| !*a).map(|(id, _)| id.as_str()).collect();
    assert!(accepted.len() >= 20, "a steady stream of accepted commands: {tally:?}");
    let (entries, _) = kasmina_daemon::journal_tools::read_journal(&files.journal).unwrap();
    let journaled: BTreeSet<String> = entries
        .iter()
        .filter_map(|e| match &e.record {
            JournalRecord::CommandAccepted { command, .. } => Some(command.command_id.clone()),
            _ => None,
        })
        .collect();
    let lost: Vec<&&str> = accepted.iter().filter(|id| !journaled.contains(**id)).collect();
    assert!(lost.is_empty(), "accepted commands missing from the journal: {lost:?}");
    assert!(refused.iter().all(|id| !journaled.contains(*id)), "a refused command reached the journal");
    assert!(daemon.terminate().success());
    println!(
        "{} fault fixtures refused under load ({} commands: {} accepted, {} refused; {} steps; {} gate verdicts \
         during the faults), 3 valid reloads accepted, 0 lost; refusal latency {:?}; {:?} in all",
        FAULTS.len(),
        tally.commands.len(),
        accepted.len(),
        refused.len(),
        tally.steps,
        verdicts.len(),
        timings,
        started.elapsed()
    );
}

/// `kasmina plugin reload`, as an operator runs it: it finds the daemon
/// behind the socket, triggers the reload and reports its outcome in text,
/// JSON Lines and the exit status (0 reloaded, 1 refused). Negative
/// control: a fault fixture is refused, exit 1, naming the canary's reason.
#[test]
fn the_reload_verb_reports_the_outcome_in_its_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path()).with_patient_plugins();
    let base = std::fs::read_to_string(&files.settings).unwrap();
    let daemon = Daemon::start(&files, &[]);
    let socket = files.socket.to_str().unwrap();

    write_settings(&files, &base, Some((artifacts::FIXTURE_PANIC, artifacts::FIXTURE_PANIC_SHA256)));
    let (code, out, err) = support::daemon_process::cli(&["plugin", "reload", "--socket", socket]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("sent SIGHUP") && out.contains("reload refused") && out.contains("plugin_trap"), "{out}");
    assert!(out.contains("0 reloaded, 1 refused"), "{out}");

    write_settings(&files, &base, Some((artifacts::FIXTURE_GATES_V0_1, artifacts::FIXTURE_GATES_V0_1_SHA256)));
    let (code, out, err) = support::daemon_process::cli(&["plugin", "reload", "--socket", socket, "--json"]);
    assert_eq!(code, 0, "{out}{err}");
    let names: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("{e}: {l}"))["name"].to_string()
        })
        .collect();
    assert_eq!(
        names,
        ["\"kasmina.plugin.reload_started\"", "\"kasmina.plugin.reloaded\"", "\"kasmina.plugin.reload_finished\""],
        "{out}"
    );
    assert!(daemon.terminate().success());
    // No daemon behind the socket: an error that says what to do.
    let (code, _, err) = support::daemon_process::cli(&["plugin", "reload", "--socket", socket]);
    assert!(code != 0 && err.contains("is `kasmina serve --socket"), "{err}");
}
