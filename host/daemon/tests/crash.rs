//! kill -9 of the real `kasmina serve` in the middle of a stream of signed
//! commands and trainer step reports, over and over.
//!
//! One client thread plays controller and trainer: it registers, then
//! sends an endless stream — GERMINATE of a DORMANT seed, then PAUSE,
//! RESUME and CULL of the seed germinated a round before, over 24 slots (a
//! one-second embargo brings culled slots back), and step reports that attach seeds and move them through their
//! gates (TRAINING, BLENDING, …), so transitions and gate verdicts are
//! killed mid-write too — and after every answer reads the seed states:
//! the acknowledged state. The journal is small (4 KiB segments, 16 KiB
//! before compaction), so calls rotate segments and compact all the time.
//! Each run the test picks a target — any call, a command, the call that
//! will compact, the call that will rotate — waits for it to start and
//! SIGKILLs the daemon a random fraction of a call's latency later.
//!
//! After each restart:
//! - the restored state equals the acknowledged state, or (only for the
//!   call in flight at the kill) that state plus that call's effect —
//!   a command changing only its own seed as its operation does, a step
//!   report moving seeds along allowed lifecycle edges: 0 lost
//!   acknowledgements, nothing half-applied;
//! - the last acknowledged command, re-sent, is refused `nonce_replayed`;
//! - a command in flight is re-sent: `nonce_replayed` exactly when its
//!   effect was restored (it became durable before the kill), accepted
//!   exactly when not — and the test does not stop before it has seen
//!   both outcomes;
//! - every kill landed inside the stream (the client's call in flight
//!   failed), and some landed inside a segment rotation and inside a
//!   compaction (told apart afterwards by the segment files: a new
//!   segment, in a call that started past the compaction bound or not).
//!
//! `KASMINA_CRASH_POINTS=N` sets the number of kills (default 24; a
//! campaign uses 200 or more); `KASMINA_CRASH_SEED` the seed.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kasmina_client::{ClientSettings, DaemonClient};
use leyline::api::{HostRegistration, KasminaApi, SiteSpec, SlotSpec};
use leyline::protocol::Role;
use leyline::{AdaptationCommand, CommandPayload, Dim, ReasonCode, SeedOperation, SeedStage};
use rand::{Rng, SeedableRng};
use support::daemon_process::{Daemon, DaemonFiles};
use support::sim_disk::{SeedView, view};
use support::{RUN, SimTrainer, command, pause};

const SLOTS: usize = 24;
const SEGMENT_BYTES: u64 = 4 * 1024;
const COMPACT_BYTES: u64 = 16 * 1024;
const DEFAULT_KILLS: usize = 24;

fn seed_id(i: usize) -> String {
    format!("s-{i:02}")
}

fn registration(trainer: &SimTrainer) -> HostRegistration {
    let mut r = HostRegistration::new(
        RUN,
        vec![SiteSpec { name: "hidden".to_owned(), feature_shape: vec![Dim::Batch, Dim::Fixed(64)] }],
        (0..SLOTS).map(|i| SlotSpec { seed_id: seed_id(i), site: "hidden".to_owned() }).collect(),
    );
    // What the trainer holds, so a restart resynchronises instead of re-attaching.
    let held = trainer.registration();
    r.held = held.held;
    r.checkpoints = held.checkpoints;
    r
}

/// The endless stream: every third call a command, the others step
/// reports. Commands come in rounds: germinate a DORMANT seed, then pause,
/// resume and cull the seed germinated the round before (which has trained
/// and blended for a round by then, and is culled before it can fossilize;
/// a one-second embargo brings its slot back).
struct Plan {
    calls: u64,
    commands: u64,
    /// The seed germinated this round and the one before.
    current: Option<String>,
    previous: Option<String>,
}

#[derive(Debug, Clone)]
enum Call {
    Register,
    Command(Box<AdaptationCommand>),
    Step,
}

impl Plan {
    fn new() -> Self {
        Plan { calls: 0, commands: 0, current: None, previous: None }
    }

    /// The next call, given the seed states after the last answer.
    fn next(&mut self, states: &[SeedView]) -> Call {
        self.calls += 1;
        if !self.calls.is_multiple_of(3) {
            return Call::Step;
        }
        let id = format!("k{}", self.commands);
        let cmd = match self.commands % 4 {
            0 => {
                let Some(dormant) =
                    states.iter().find(|s| s.stage == SeedStage::Dormant && Some(&s.seed_id) != self.current.as_ref())
                else {
                    return Call::Step;
                };
                self.previous = self.current.replace(dormant.seed_id.clone());
                command(&id, &dormant.seed_id, SeedOperation::Germinate, true)
            }
            k => {
                let Some(seed) = self.previous.clone() else {
                    self.commands += 1;
                    return Call::Step;
                };
                match k {
                    1 => pause(&id, &seed, false),
                    2 => pause(&id, &seed, true),
                    _ => command(&id, &seed, SeedOperation::Cull, true),
                }
            }
        };
        self.commands += 1;
        Call::Command(Box::new(cmd))
    }
}

/// What the client thread tells the test.
enum Event {
    /// A state-changing call is about to be sent.
    Start { command: bool, journal_bytes: u64, newest_segment: u64 },
    /// It was answered; the state read right after it. `refused`: a
    /// command answered with a refusal (its effect must never appear).
    Acked {
        states: Vec<SeedView>,
        segments: BTreeSet<String>,
        bytes: u64,
        accepted: Option<Box<AdaptationCommand>>,
        refused: bool,
    },
}

/// How the client thread's run ended.
struct Ended {
    plan: Plan,
    trainer: SimTrainer,
    /// The call whose answer never came (`None`: the kill hit the read
    /// after an answer).
    in_flight: Option<Call>,
    /// The call answered just before the kill hit the state read after
    /// it (acknowledged, state unread), and whether it was an accepted command.
    unread: Option<(Call, Option<Box<AdaptationCommand>>)>,
}

fn segments(journal: &Path) -> (BTreeSet<String>, u64, u64) {
    let mut names = BTreeSet::new();
    let (mut total, mut newest) = (0, (String::new(), 0));
    for e in std::fs::read_dir(journal).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
        total += len;
        if name > newest.0 {
            newest = (name.clone(), len);
        }
        names.insert(name);
    }
    (names, total, newest.1)
}

fn client(files: &DaemonFiles, role: Role) -> DaemonClient {
    DaemonClient::connect_unix(&files.socket, role, "crash-test", ClientSettings::default()).unwrap()
}

/// The client thread: register, then the stream until the daemon dies.
fn stream(files: &DaemonFiles, mut plan: Plan, mut trainer: SimTrainer, tx: mpsc::Sender<Event>) -> Ended {
    let controller = client(files, Role::Controller);
    let trainer_conn = client(files, Role::Trainer);
    let observer = client(files, Role::Observer);
    let mut call = Call::Register;
    loop {
        let (_, journal_bytes, newest_segment) = segments(&files.journal);
        let _ = tx.send(Event::Start { command: matches!(call, Call::Command(_)), journal_bytes, newest_segment });
        let answered = match &call {
            Call::Register => trainer_conn.register_host(registration(&trainer)).map(|_| None),
            Call::Step => trainer.try_step(&trainer_conn).map(|_| None),
            Call::Command(cmd) => {
                controller.submit_command(AdaptationCommand::clone(cmd)).map(|o| o.accepted.then(|| cmd.clone()))
            }
        };
        let Ok(accepted) = answered else { return Ended { plan, trainer, in_flight: Some(call), unread: None } };
        let Ok(read) = observer.seed_states() else {
            return Ended { plan, trainer, in_flight: None, unread: Some((call, accepted)) };
        };
        let states = project(read);
        let refused = matches!(call, Call::Command(_)) && accepted.is_none();
        let (segments, bytes, _) = segments(&files.journal);
        let _ = tx.send(Event::Acked { states: states.clone(), segments, bytes, accepted, refused });
        call = plan.next(&states);
    }
}

fn project(states: Vec<leyline::SeedState>) -> Vec<SeedView> {
    states
        .into_iter()
        .map(|s| SeedView {
            seed_id: s.seed_id,
            stage: s.stage,
            blueprint_id: s.blueprint_id,
            paused: s.paused,
            blend_mode: s.blend_mode,
        })
        .collect()
}

/// Whether `to` is a stage `from` can reach within one call: one edge of
/// the table, or a cull followed by the embargo.
fn one_call_away(from: SeedStage, to: SeedStage) -> bool {
    from == to
        || from.check_transition(to).is_ok()
        || (to == SeedStage::Embargoed && from.check_transition(SeedStage::Culled).is_ok())
        || (to == SeedStage::Dormant && from == SeedStage::Embargoed)
}

/// Whether `after` is `before` with the effect of `call` (which may have
/// changed nothing visible).
fn is_effect_of(before: &[SeedView], after: &[SeedView], call: &Call) -> Result<(), String> {
    if before.len() != after.len() {
        return Err(format!("{} seeds before, {} after", before.len(), after.len()));
    }
    for (b, a) in before.iter().zip(after) {
        if b == a {
            continue;
        }
        let ok = match call {
            Call::Command(cmd) if cmd.target_seed_id != b.seed_id => false,
            Call::Command(cmd) => match &cmd.payload {
                CommandPayload::Pause(p) => a.paused != p.resume && a.stage == b.stage,
                CommandPayload::Seed(sc) if sc.operation == SeedOperation::Germinate => {
                    b.stage == SeedStage::Dormant && a.stage == SeedStage::Germinated && a.blueprint_id.is_some()
                }
                CommandPayload::Seed(_) => {
                    matches!(a.stage, SeedStage::Culled | SeedStage::Embargoed) && one_call_away(b.stage, a.stage)
                }
                _ => false,
            },
            Call::Step | Call::Register => one_call_away(b.stage, a.stage),
        };
        if !ok {
            return Err(format!("{:?} → {:?} is not what {:?} does", b, a, call_label(call)));
        }
    }
    Ok(())
}

fn call_label(call: &Call) -> String {
    match call {
        Call::Register => "register".into(),
        Call::Step => "a step report".into(),
        Call::Command(c) => format!("{} {}", c.command_id, c.command_type().as_str()),
    }
}

#[derive(Debug, Default)]
struct Tally {
    kills: usize,
    in_state_changing_call: usize,
    in_read: usize,
    acked_calls: usize,
    in_flight_commands_durable: usize,
    in_flight_commands_not_durable: usize,
    in_flight_steps_durable: usize,
    in_flight_commands_refused: usize,
    in_rotation: usize,
    in_compaction: usize,
    torn_tails_cut: usize,
    refused_commands: usize,
    /// Stages seen in acknowledged states: the stream reaches the gates.
    stages_seen: BTreeSet<&'static str>,
}

/// Which kind of call this run aims at.
#[derive(Debug, Clone, Copy)]
enum Target {
    Any,
    Command,
    Compaction,
    Rotation,
}

#[test]
fn kill_9_inside_the_stream_loses_no_acknowledged_call() {
    let kills_wanted: usize =
        std::env::var("KASMINA_CRASH_POINTS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_KILLS);
    let seed: u64 =
        std::env::var("KASMINA_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x006b_6173_6d69_6e61);
    println!("KASMINA_CRASH_SEED={seed} KASMINA_CRASH_POINTS={kills_wanted}");
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path()).with_patient_plugins();
    // Culled slots come back within the campaign.
    let text = std::fs::read_to_string(&files.settings).unwrap();
    std::fs::write(&files.settings, text.replace("[lifecycle]\n", "[lifecycle]\nembargo_s = 1\n")).unwrap();
    let args = [
        "--journal-segment-bytes".to_owned(),
        SEGMENT_BYTES.to_string(),
        "--journal-compact-bytes".to_owned(),
        COMPACT_BYTES.to_string(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut plan = Plan::new();
    let mut trainer = SimTrainer::new(100);
    let mut acked_states: Vec<SeedView> = Vec::new();
    let mut acked_segments: BTreeSet<String> = BTreeSet::new();
    let mut acked_bytes = 0u64;
    let mut last_acked_command: Option<Box<AdaptationCommand>> = None;
    let mut in_flight: Option<Call> = None;
    let mut unread: Option<Call> = None;
    let mut latency =
        BTreeMap::<bool, Duration>::from([(false, Duration::from_millis(3)), (true, Duration::from_millis(6))]);
    let targets = [Target::Any, Target::Command, Target::Compaction, Target::Rotation];
    let mut run = 0usize;
    loop {
        let daemon = Daemon::start(&files, &args);
        let observer = client(&files, Role::Observer);
        let restored = view(&observer);
        if run > 0 {
            tally.torn_tails_cut += usize::from(daemon.start_report.contains("torn tail cut"));
            let context = format!("run {run} ({:?} in flight)", in_flight.as_ref().map(call_label));
            let durable_effect = restored != acked_states;
            // Either the call in flight, or the acknowledged call whose state
            // the kill kept us from reading: at most its effect may differ.
            let differs_by = in_flight.as_ref().or(unread.as_ref());
            if let Err(why) = match differs_by {
                Some(call) => is_effect_of(&acked_states, &restored, call),
                None if durable_effect => Err("changed with no call in flight".to_owned()),
                None => Ok(()),
            } {
                panic!(
                    "{context}: restored state is neither the acknowledged one nor it plus the call in flight: {why}\n{}",
                    daemon.start_report
                );
            }
            let controller = client(&files, Role::Controller);
            if let Some(cmd) = &last_acked_command {
                let replay = controller.submit_command(AdaptationCommand::clone(cmd)).unwrap();
                assert_eq!(
                    replay.reason,
                    Some(ReasonCode::NonceReplayed),
                    "{context}: acknowledged {} re-sent: {replay:?}",
                    cmd.command_id
                );
            }
            match &in_flight {
                Some(Call::Command(cmd)) => {
                    let again = controller.submit_command(AdaptationCommand::clone(cmd)).unwrap();
                    if durable_effect {
                        assert_eq!(
                            again.reason,
                            Some(ReasonCode::NonceReplayed),
                            "{context}: durable in-flight command re-sent: {again:?}"
                        );
                        tally.in_flight_commands_durable += 1;
                    } else if again.accepted {
                        tally.in_flight_commands_not_durable += 1;
                    } else if again.reason == Some(ReasonCode::NonceReplayed) {
                        // Its id is remembered but it changed nothing: only
                        // right if it was refused for its own reason (its id
                        // then reaches the journal with the next snapshot, a
                        // compaction in the same call for one). The same
                        // command under a fresh id must be refused too.
                        let copy =
                            controller.submit_command(fresh_copy(cmd, &format!("{}-again", cmd.command_id))).unwrap();
                        assert!(
                            !copy.accepted,
                            "{context}: an in-flight command left its id but not its effect: {again:?}"
                        );
                        tally.in_flight_commands_refused += 1;
                    } else {
                        // Refused for its own reason (a stage the plan did not foresee).
                        tally.in_flight_commands_refused += 1;
                    }
                }
                Some(Call::Step) if durable_effect => tally.in_flight_steps_durable += 1,
                _ => {}
            }
        }
        let enough = tally.kills >= kills_wanted
            && tally.in_flight_commands_durable > 0
            && tally.in_flight_commands_not_durable > 0
            && tally.in_rotation > 0
            && tally.in_compaction > 0;
        if enough || tally.kills >= kills_wanted * 4 {
            drop(observer);
            let status = daemon.terminate();
            assert!(status.success(), "graceful shutdown exits 0: {status:?}");
            break;
        }
        drop(observer);

        // Stream from a thread; kill the daemon inside it.
        let (tx, rx) = mpsc::channel::<Event>();
        let files_for_thread = clone_files(&files);
        let sender = std::thread::spawn(move || stream(&files_for_thread, plan, trainer, tx));
        let target = targets[run % targets.len()];
        let skip = rng.gen_range(1..=12usize);
        let mut starts = 0usize;
        let mut armed_for: Option<(bool, bool)> = None;
        let mut last_start: Option<(bool, Instant)> = None;
        let mut acks_this_run = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let Ok(event) = rx.recv_timeout(Duration::from_secs(10)) else { break };
            match event {
                Event::Start { command, journal_bytes, newest_segment } => {
                    starts += 1;
                    last_start = Some((command, Instant::now()));
                    let hit = starts > skip
                        && match target {
                            Target::Any => true,
                            Target::Command => command,
                            // Past the bound at its start: this call compacts when it ends.
                            Target::Compaction => journal_bytes > COMPACT_BYTES,
                            Target::Rotation => newest_segment + 1_024 >= SEGMENT_BYTES,
                        };
                    if hit || starts > skip + 60 {
                        armed_for = Some((command, matches!(target, Target::Compaction) && hit));
                        break;
                    }
                }
                Event::Acked { states, segments, bytes, accepted, refused } => {
                    acks_this_run += 1;
                    tally.refused_commands += usize::from(refused);
                    tally.stages_seen.extend(states.iter().map(|v| v.stage.as_str()));
                    acked_states = states;
                    acked_segments = segments;
                    acked_bytes = bytes;
                    if accepted.is_some() {
                        last_acked_command = accepted;
                    }
                    if let Some((kind, at)) = last_start.take() {
                        let l = latency.entry(kind).or_default();
                        *l = (*l * 7 + at.elapsed()) / 8;
                    }
                }
            }
        }
        let (kind, compacting) = armed_for.expect("the stream reached its target call");
        // A random fraction of a call's latency: before, inside, or just
        // after the point where its record becomes durable. A compaction
        // (rotate, carry, snapshot, delete: five fsyncs) takes longer.
        let l = latency[&kind];
        let reach = if compacting { 0.5..5.0 } else { 0.0..1.3 };
        std::thread::sleep(l.mul_f64(rng.gen_range(reach)));
        daemon.kill();
        let ended = sender.join().unwrap();
        // Answers that raced the kill are acknowledgements too.
        for event in rx.try_iter() {
            if let Event::Acked { states, segments, bytes, accepted, refused } = event {
                acks_this_run += 1;
                tally.refused_commands += usize::from(refused);
                tally.stages_seen.extend(states.iter().map(|v| v.stage.as_str()));
                acked_states = states;
                acked_segments = segments;
                acked_bytes = bytes;
                if accepted.is_some() {
                    last_acked_command = accepted;
                }
            }
        }
        tally.kills += 1;
        tally.acked_calls += acks_this_run;
        match &ended.in_flight {
            Some(Call::Register) | Some(Call::Step) | Some(Call::Command(_)) => tally.in_state_changing_call += 1,
            None => tally.in_read += 1,
        }
        // The segment files tell where the kill landed: a call that started
        // past the compaction bound compacts (a new segment, then the old
        // ones deleted); any other new segment is a rotation.
        let (after, _, _) = segments(&files.journal);
        let changed = after != acked_segments;
        if changed && acked_bytes > COMPACT_BYTES {
            tally.in_compaction += 1;
        } else if after.iter().any(|s| !acked_segments.contains(s)) {
            tally.in_rotation += 1;
        }
        in_flight = ended.in_flight;
        unread = ended.unread.as_ref().map(|(call, _)| call.clone());
        if let Some((_, Some(cmd))) = ended.unread {
            last_acked_command = Some(cmd);
        }
        plan = ended.plan;
        trainer = ended.trainer;
        run += 1;
    }
    println!(
        "{} kills ({} in a state-changing call, {} in the read after one; {} inside a segment rotation, {} inside a compaction), {} acknowledged calls ({} commands refused for their own reasons), in flight: {} commands durable, {} not, {} refused for their own reasons, {} step reports durable; stages seen {:?}; {} torn tails cut; 0 lost acknowledgements, 0 resurrected refusals; {:?}",
        tally.kills,
        tally.in_state_changing_call,
        tally.in_read,
        tally.in_rotation,
        tally.in_compaction,
        tally.acked_calls,
        tally.refused_commands,
        tally.in_flight_commands_durable,
        tally.in_flight_commands_not_durable,
        tally.in_flight_commands_refused,
        tally.in_flight_steps_durable,
        tally.stages_seen,
        tally.torn_tails_cut,
        started.elapsed()
    );
    assert!(tally.kills >= kills_wanted);
    assert_eq!(tally.in_state_changing_call + tally.in_read, tally.kills, "every kill landed inside the stream");
    assert!(tally.in_state_changing_call * 2 >= tally.kills, "most kills hit a state-changing call: {tally:?}");
    assert!(tally.in_flight_commands_durable > 0, "an in-flight command became durable: {tally:?}");
    assert!(tally.in_flight_commands_not_durable > 0, "an in-flight command was lost: {tally:?}");
    assert!(tally.in_rotation > 0 && tally.in_compaction > 0, "kills during rotation and compaction: {tally:?}");
    for stage in ["TRAINING", "BLENDING", "EMBARGOED"] {
        assert!(tally.stages_seen.contains(stage), "the stream moves seeds through their gates: {tally:?}");
    }
}

/// The same command under another id (signed afresh).
fn fresh_copy(cmd: &AdaptationCommand, id: &str) -> AdaptationCommand {
    match &cmd.payload {
        CommandPayload::Seed(sc) => command(id, &cmd.target_seed_id, sc.operation, true),
        CommandPayload::Pause(p) => pause(id, &cmd.target_seed_id, p.resume),
        other => panic!("the plan sends no {other:?}"),
    }
}

fn clone_files(f: &DaemonFiles) -> DaemonFiles {
    DaemonFiles {
        root: f.root.clone(),
        urza: f.urza.clone(),
        key_file: f.key_file.clone(),
        settings: f.settings.clone(),
        socket: f.socket.clone(),
        journal: PathBuf::from(&f.journal),
    }
}
