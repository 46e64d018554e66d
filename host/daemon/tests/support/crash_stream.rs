//! The crash campaign's stream and its checks after a restart, shared by
//! `crash.rs` (kills anywhere in the stream) and `reload_kills.rs` (kills
//! during a hot plugin reload). Included by each with `#[path]`; it needs
//! the including crate's `mod support`.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use kasmina_client::{ClientSettings, DaemonClient};
use leyline::api::{HostRegistration, KasminaApi, SiteSpec, SlotSpec};
use leyline::protocol::Role;
use leyline::{AdaptationCommand, CommandPayload, Dim, ReasonCode, SeedOperation, SeedStage};

use crate::support::daemon_process::DaemonFiles;
use crate::support::sim_disk::{SeedView, project};
use crate::support::{RUN, SimTrainer, command, pause};

/// Seed slots the stream's trainer registers.
pub const SLOTS: usize = 24;

pub fn seed_id(i: usize) -> String {
    format!("s-{i:02}")
}

pub fn registration(trainer: &SimTrainer) -> HostRegistration {
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
pub struct Plan {
    pub calls: u64,
    pub commands: u64,
    /// The seed germinated this round and the one before.
    pub current: Option<String>,
    pub previous: Option<String>,
}

#[derive(Debug, Clone)]
pub enum Call {
    Register,
    Command(Box<AdaptationCommand>),
    Step,
}

impl Plan {
    pub fn new() -> Self {
        Plan { calls: 0, commands: 0, current: None, previous: None }
    }

    /// The next call, given the seed states after the last answer.
    pub fn next(&mut self, states: &[SeedView]) -> Call {
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
pub enum Event {
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
pub struct Ended {
    pub plan: Plan,
    pub trainer: SimTrainer,
    /// The call whose answer never came (`None`: the kill hit the read
    /// after an answer).
    pub in_flight: Option<Call>,
    /// The call answered just before the kill hit the state read after
    /// it (acknowledged, state unread), and whether it was an accepted command.
    pub unread: Option<(Call, Option<Box<AdaptationCommand>>)>,
}

pub fn segments(journal: &Path) -> (BTreeSet<String>, u64, u64) {
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

pub fn client(files: &DaemonFiles, role: Role) -> DaemonClient {
    DaemonClient::connect_unix(&files.socket, role, "crash-test", ClientSettings::default()).unwrap()
}

/// The client thread: register, then the stream until the daemon dies.
pub fn stream(files: &DaemonFiles, mut plan: Plan, mut trainer: SimTrainer, tx: mpsc::Sender<Event>) -> Ended {
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

/// Whether `to` is a stage `from` can reach within one call: one edge of
/// the table, or a cull followed by the embargo.
pub fn one_call_away(from: SeedStage, to: SeedStage) -> bool {
    from == to
        || from.check_transition(to).is_ok()
        || (to == SeedStage::Embargoed && from.check_transition(SeedStage::Culled).is_ok())
        || (to == SeedStage::Dormant && from == SeedStage::Embargoed)
}

/// Whether `after` is `before` with the effect of `call` (which may have
/// changed nothing visible).
pub fn is_effect_of(before: &[SeedView], after: &[SeedView], call: &Call) -> Result<(), String> {
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

pub fn call_label(call: &Call) -> String {
    match call {
        Call::Register => "register".into(),
        Call::Step => "a step report".into(),
        Call::Command(c) => format!("{} {}", c.command_id, c.command_type().as_str()),
    }
}

/// The same command under another id (signed afresh).
pub fn fresh_copy(cmd: &AdaptationCommand, id: &str) -> AdaptationCommand {
    match &cmd.payload {
        CommandPayload::Seed(sc) => command(id, &cmd.target_seed_id, sc.operation, true),
        CommandPayload::Pause(p) => pause(id, &cmd.target_seed_id, p.resume),
        other => panic!("the plan sends no {other:?}"),
    }
}

pub fn clone_files(f: &DaemonFiles) -> DaemonFiles {
    DaemonFiles {
        root: f.root.clone(),
        urza: f.urza.clone(),
        key_file: f.key_file.clone(),
        settings: f.settings.clone(),
        socket: f.socket.clone(),
        journal: PathBuf::from(&f.journal),
    }
}

/// What became of the call in flight at the kill, as found after the restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InFlight {
    /// No state-changing call was in flight (or it changed nothing visible).
    Nothing,
    /// A command whose effect was restored: re-sent, it is `nonce_replayed`.
    CommandDurable,
    /// A command whose effect was lost: re-sent, it is accepted.
    CommandNotDurable,
    /// A command refused for its own reason.
    CommandRefused,
    /// A step report whose effect was restored.
    StepDurable,
}

/// The campaign's checks after a restart; panics naming `context` when one
/// fails:
/// - the restored state equals the acknowledged state, or that state plus
///   the effect of the call in flight (or of the acknowledged call whose
///   state the kill kept the client from reading);
/// - the last acknowledged command, re-sent, is refused `nonce_replayed`;
/// - a command in flight, re-sent, is `nonce_replayed` exactly when its
///   effect was restored and accepted exactly when not. The trainer
///   registers (`registration`) before the re-send: a restarted daemon
///   keeps seeds but not the registration, and without one every command
///   is refused `invalid_stage`, which would hide a lost command.
#[allow(clippy::too_many_arguments)]
pub fn check_restart(
    files: &DaemonFiles,
    registration: HostRegistration,
    start_report: &str,
    context: &str,
    restored: &[SeedView],
    acked_states: &[SeedView],
    in_flight: Option<&Call>,
    unread: Option<&Call>,
    last_acked_command: Option<&AdaptationCommand>,
) -> InFlight {
    let durable_effect = restored != acked_states;
    let differs_by = in_flight.or(unread);
    if let Err(why) = match differs_by {
        Some(call) => is_effect_of(acked_states, restored, call),
        None if durable_effect => Err("changed with no call in flight".to_owned()),
        None => Ok(()),
    } {
        panic!(
            "{context}: restored state is neither the acknowledged one nor it plus the call in flight: {why}\n{start_report}"
        );
    }
    let controller = client(files, Role::Controller);
    if let Some(cmd) = last_acked_command {
        let replay = controller.submit_command(cmd.clone()).unwrap();
        assert_eq!(
            replay.reason,
            Some(ReasonCode::NonceReplayed),
            "{context}: acknowledged {} re-sent: {replay:?}",
            cmd.command_id
        );
    }
    match in_flight {
        Some(Call::Command(cmd)) => {
            client(files, Role::Trainer).register_host(registration).expect("the trainer registers after a restart");
            let again = controller.submit_command(AdaptationCommand::clone(cmd)).unwrap();
            if durable_effect {
                assert_eq!(
                    again.reason,
                    Some(ReasonCode::NonceReplayed),
                    "{context}: durable in-flight command re-sent: {again:?}"
                );
                InFlight::CommandDurable
            } else if again.accepted {
                InFlight::CommandNotDurable
            } else if again.reason == Some(ReasonCode::NonceReplayed) {
                // Its id is remembered but it changed nothing: only right if
                // it was refused for its own reason (its id then reaches the
                // journal with the next snapshot, a compaction in the same
                // call for one). The same command under a fresh id must be
                // refused too.
                let copy = controller.submit_command(fresh_copy(cmd, &format!("{}-again", cmd.command_id))).unwrap();
                assert!(!copy.accepted, "{context}: an in-flight command left its id but not its effect: {again:?}");
                InFlight::CommandRefused
            } else {
                // Refused for its own reason (a stage the plan did not foresee).
                InFlight::CommandRefused
            }
        }
        Some(Call::Step) if durable_effect => InFlight::StepDurable,
        _ => InFlight::Nothing,
    }
}
