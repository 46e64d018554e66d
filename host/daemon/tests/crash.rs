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
//! The stream and the checks after a restart live in
//! `support/crash_stream.rs`, shared with `reload_kills.rs` (kills during a
//! hot plugin reload).
//!
//! `KASMINA_CRASH_POINTS=N` sets the number of kills (default 24; a
//! campaign uses 200 or more); `KASMINA_CRASH_SEED` the seed.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "support/crash_stream.rs"]
mod crash_stream;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crash_stream::{
    Call, Event, InFlight, Plan, call_label, check_restart, client, clone_files, registration, segments, stream,
};
use leyline::AdaptationCommand;
use leyline::protocol::Role;
use rand::{Rng, SeedableRng};
use support::SimTrainer;
use support::daemon_process::{Daemon, DaemonFiles};
use support::sim_disk::{SeedView, view};

const SEGMENT_BYTES: u64 = 4 * 1024;
const COMPACT_BYTES: u64 = 16 * 1024;
const DEFAULT_KILLS: usize = 24;

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
            let found = check_restart(
                &files,
                registration(&trainer),
                &daemon.start_report,
                &context,
                &restored,
                &acked_states,
                in_flight.as_ref(),
                unread.as_ref(),
                last_acked_command.as_deref(),
            );
            match found {
                InFlight::CommandDurable => tally.in_flight_commands_durable += 1,
                InFlight::CommandNotDurable => tally.in_flight_commands_not_durable += 1,
                InFlight::CommandRefused => tally.in_flight_commands_refused += 1,
                InFlight::StepDurable => tally.in_flight_steps_durable += 1,
                InFlight::Nothing => {}
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
    assert!(tally.in_flight_commands_durable > 0, "the campaign also killed a command after it was durable: {tally:?}");
    assert!(
        tally.in_flight_commands_not_durable > 0,
        "the campaign also killed a command before it was durable: {tally:?}"
    );
    assert!(tally.in_rotation > 0 && tally.in_compaction > 0, "kills during rotation and compaction: {tally:?}");
    for stage in ["TRAINING", "BLENDING", "EMBARGOED"] {
        assert!(tally.stages_seen.contains(stage), "the stream moves seeds through their gates: {tally:?}");
    }
}
