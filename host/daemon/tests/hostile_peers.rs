//! Hostile peers against the real daemon (real embedded host, real Unix
//! socket): for every client frame type, generated malformed, truncated,
//! oversized, wrong-role and wrong-version frames (at least 1 000 per class,
//! seeded, so a failure names a reproducible case) each get a refusal and a
//! closed connection while a well-behaved trainer and controller keep
//! working; stalled and trickled frames and silent (half-open) connections
//! are reaped on their timeouts; the connection cap holds under a barrage;
//! a trainer connection stays bound to the run and model it registered.
//!
//! `cargo test -p kasmina-daemon --test hostile_peers`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::io::{ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kasmina_client::codec::{DEFAULT_MAX_REQUEST_BYTES, decode_payload, encode_frame};
use kasmina_client::{ClientError, DaemonClient, FrameError};
use kasmina_daemon::ServerSettings;
use leyline::api::{ApiErrorCode, KasminaApi, SlotSpec};
use leyline::protocol::{ClientFrame, PROTOCOL_VERSION, RequestBody, ResponseBody, Role, ServerFrame};
use leyline::{SeedOperation, TelemetryLevel};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use support::{RUN, RawConn, TestServer, command, registration, settings, step, test_api};

/// Generated frames per class (spread over the frame types).
const PER_CLASS: usize = 1_008;

/// One of each client frame type, as a well-behaved peer would send it.
fn frame_types() -> Vec<(&'static str, ClientFrame)> {
    let req = |id: u64, body: RequestBody| ClientFrame::Request { correlation_id: id, body };
    vec![
        (
            "Hello",
            ClientFrame::Hello { protocol_version: PROTOCOL_VERSION, role: Role::Trainer, client_name: "h".into() },
        ),
        (
            "SubmitCommand",
            req(1, RequestBody::SubmitCommand(command("hostile-1", "hidden-0", SeedOperation::Germinate, true))),
        ),
        ("RegisterHost", req(2, RequestBody::RegisterHost(registration()))),
        ("FetchKernel", req(3, RequestBody::FetchKernel { blueprint_id: support::BLUEPRINT.into() })),
        ("StepReport", req(4, RequestBody::StepReport(step(1)))),
        ("SeedStates", req(5, RequestBody::SeedStates)),
        ("Status", req(6, RequestBody::Status)),
        ("SubscribeTelemetry", req(7, RequestBody::SubscribeTelemetry { min_level: TelemetryLevel::Info })),
        ("DrainTelemetry", req(8, RequestBody::DrainTelemetry)),
    ]
}

fn payload(frame: &ClientFrame) -> Vec<u8> {
    postcard::to_stdvec(frame).unwrap()
}

fn framed(frame: &ClientFrame) -> Vec<u8> {
    let mut out = Vec::new();
    encode_frame(frame, u32::MAX, &mut out).unwrap();
    out
}

fn with_prefix(payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Hostile writes may meet a socket the daemon already closed.
fn send_raw(stream: &mut UnixStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}

/// Reads what the daemon says until it closes; returns the frames.
fn drain_until_closed(conn: &mut RawConn, case: &str) -> Vec<ServerFrame> {
    let started = Instant::now();
    let mut frames = Vec::new();
    loop {
        match conn.recv() {
            Ok(frame) => frames.push(frame),
            Err(FrameError::Eof) => return frames,
            // Linux reports ECONNRESET after the data when the daemon closed
            // with our unread bytes in its buffer: closed all the same.
            Err(FrameError::Io(e)) if e.kind() == ErrorKind::ConnectionReset => return frames,
            Err(e) => {
                panic!("{case}: expected the daemon to close, got {e} after {:?} ({frames:?})", started.elapsed())
            }
        }
    }
}

/// The connection ends with one Closing frame naming `needle`.
fn expect_closing(conn: &mut RawConn, needle: &str, case: &str) -> Vec<ServerFrame> {
    let frames = drain_until_closed(conn, case);
    match frames.last() {
        Some(ServerFrame::Closing(err)) => assert!(err.message.contains(needle), "{case}: {err}"),
        other => panic!("{case}: expected Closing naming {needle:?}, got {other:?} ({frames:?})"),
    }
    frames
}

/// The handshake ends with one Refused frame naming every needle.
fn expect_refused(conn: &mut RawConn, needles: &[&str], case: &str) {
    let frames = drain_until_closed(conn, case);
    match frames.as_slice() {
        [ServerFrame::Refused { reason }] => {
            for n in needles {
                assert!(reason.contains(n), "{case}: {reason:?} lacks {n:?}");
            }
        }
        other => panic!("{case}: expected one Refused, got {other:?}"),
    }
}

/// A well-behaved trainer and controller working through the barrage;
/// every call must succeed. Returns the stop flag and the round-trip count.
struct Bystanders {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Bystanders {
    fn start(path: &Path) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let trainer = {
            let (path, stop, done) = (path.to_path_buf(), Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || {
                let c = DaemonClient::connect_unix(&path, Role::Trainer, "bystander", Default::default()).unwrap();
                c.register_host(registration()).unwrap();
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    c.step_report(step(n)).unwrap();
                    c.status().unwrap();
                    done.fetch_add(2, Ordering::SeqCst);
                }
            })
        };
        let controller = {
            let (path, stop, done) = (path.to_path_buf(), Arc::clone(&stop), Arc::clone(&done));
            std::thread::spawn(move || {
                let c = DaemonClient::connect_unix(&path, Role::Controller, "bystander", Default::default()).unwrap();
                while !stop.load(Ordering::SeqCst) {
                    c.seed_states().unwrap();
                    done.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        Bystanders { stop, done, threads: vec![trainer, controller] }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().expect("a well-behaved client failed during the barrage");
        }
        self.done.load(Ordering::SeqCst)
    }
}

/// Runs `cases` hostile connections, `case(i, rng, path)` each.
fn barrage(path: &Path, seed: u64, mut case: impl FnMut(usize, &mut SmallRng, &Path)) {
    let mut rng = SmallRng::seed_from_u64(seed);
    for i in 0..PER_CLASS {
        case(i, &mut rng, path);
    }
}

fn malformed(path: &Path) {
    let types = frame_types();
    barrage(path, 1, |i, rng, path| {
        let (name, frame) = &types[i % types.len()];
        // Mutate the real encoding until it no longer decodes.
        let mut bytes = payload(frame);
        loop {
            match rng.gen_range(0..4) {
                0 => {
                    let at = rng.gen_range(0..bytes.len());
                    bytes[at] ^= rng.gen_range(1..=255u8);
                }
                1 => bytes.push(rng.r#gen()),
                2 if bytes.len() > 1 => {
                    bytes.remove(rng.gen_range(0..bytes.len()));
                }
                _ => {
                    let at = rng.gen_range(0..bytes.len());
                    bytes[at] = 0xFF;
                }
            }
            if decode_payload::<ClientFrame>(&bytes).is_err() {
                break;
            }
        }
        let case = format!("malformed {name} #{i}");
        if *name == "Hello" {
            let mut c = RawConn::connect(path);
            send_raw(&mut c.stream, &with_prefix(&bytes));
            expect_refused(&mut c, &["bad handshake frame"], &case);
        } else {
            let mut c = RawConn::hello(path, Role::Controller);
            send_raw(&mut c.stream, &with_prefix(&bytes));
            expect_closing(&mut c, "does not decode", &case);
        }
    });
}

fn truncated(path: &Path) {
    let types = frame_types();
    barrage(path, 2, |i, rng, path| {
        let (name, frame) = &types[i % types.len()];
        let bytes = framed(frame);
        let cut = rng.gen_range(1..bytes.len());
        let case = format!("truncated {name} at {cut} of {} #{i}", bytes.len());
        let mut c = if *name == "Hello" { RawConn::connect(path) } else { RawConn::hello(path, Role::Trainer) };
        send_raw(&mut c.stream, &bytes[..cut]);
        let _ = c.stream.shutdown(std::net::Shutdown::Write);
        if *name == "Hello" {
            expect_refused(&mut c, &["inside a frame"], &case);
        } else {
            expect_closing(&mut c, "inside a frame", &case);
        }
    });
}

fn oversized(path: &Path) {
    let types = frame_types();
    barrage(path, 3, |i, rng, path| {
        let (name, frame) = &types[i % types.len()];
        // An announced length past the cap, then (sometimes) the start of a payload.
        let len = rng.gen_range(DEFAULT_MAX_REQUEST_BYTES + 1..=u32::MAX);
        let mut bytes = len.to_be_bytes().to_vec();
        if rng.gen_bool(0.5) {
            bytes.extend_from_slice(&payload(frame));
        }
        let case = format!("oversized {name} ({len} bytes announced) #{i}");
        if *name == "Hello" {
            let mut c = RawConn::connect(path);
            send_raw(&mut c.stream, &bytes);
            expect_refused(&mut c, &["exceeds the maximum"], &case);
        } else {
            let mut c = RawConn::hello(path, Role::Trainer);
            send_raw(&mut c.stream, &bytes);
            expect_closing(&mut c, "exceeds the maximum", &case);
        }
    });
    // And whole frames over the cap: a real command with 1 MiB of annotations.
    for name in ["SubmitCommand", "Hello"] {
        let big = "x".repeat(DEFAULT_MAX_REQUEST_BYTES as usize);
        let frame = if name == "Hello" {
            ClientFrame::Hello { protocol_version: PROTOCOL_VERSION, role: Role::Controller, client_name: big }
        } else {
            let mut cmd = command("big", "hidden-0", SeedOperation::Germinate, true);
            cmd.annotations.insert("padding".into(), big);
            ClientFrame::Request { correlation_id: 1, body: RequestBody::SubmitCommand(cmd) }
        };
        let mut c = if name == "Hello" { RawConn::connect(path) } else { RawConn::hello(path, Role::Controller) };
        send_raw(&mut c.stream, &framed(&frame));
        if name == "Hello" {
            expect_refused(&mut c, &["exceeds the maximum"], "whole oversized Hello");
        } else {
            expect_closing(&mut c, "exceeds the maximum", "whole oversized SubmitCommand");
        }
    }
}

/// Roles that may not send `body` (empty: every role may).
fn forbidden_roles(body: &RequestBody) -> Vec<Role> {
    [Role::Controller, Role::Trainer, Role::Observer]
        .into_iter()
        .filter(|r| kasmina_daemon::check_role(*r, body).is_err())
        .collect()
}

fn wrong_role(path: &Path) {
    // Every request type some role may not send, and a second Hello
    // claiming another role (escalation).
    let types: Vec<_> = frame_types()
        .into_iter()
        .filter(|(_, f)| match f {
            ClientFrame::Request { body, .. } => !forbidden_roles(body).is_empty(),
            ClientFrame::Hello { .. } => true,
        })
        .collect();
    assert_eq!(types.len(), 6, "Hello + five request types with a role restriction");
    barrage(path, 4, |i, rng, path| {
        let (name, frame) = &types[i % types.len()];
        let case = format!("wrong-role {name} #{i}");
        match frame {
            ClientFrame::Hello { .. } => {
                let mut c = RawConn::hello(path, Role::Observer);
                let role = [Role::Controller, Role::Trainer][rng.gen_range(0..2)];
                c.send(&ClientFrame::Hello { protocol_version: PROTOCOL_VERSION, role, client_name: "up".into() });
                expect_closing(&mut c, "second Hello", &case);
            }
            ClientFrame::Request { body, .. } => {
                let roles = forbidden_roles(body);
                let role = roles[rng.gen_range(0..roles.len())];
                let id = rng.r#gen::<u64>();
                let mut c = RawConn::hello(path, role);
                c.send(&ClientFrame::Request { correlation_id: id, body: body.clone() });
                let frames = expect_closing(&mut c, "may not send", &case);
                match frames.first() {
                    Some(ServerFrame::Response { correlation_id, body: Err(err) }) => {
                        assert_eq!(*correlation_id, id, "{case}: the refusal answers the request");
                        assert_eq!(err.code, ApiErrorCode::BadRequest, "{case}");
                        assert!(err.message.contains(role.as_str()) && err.message.contains(*name), "{case}: {err}");
                    }
                    other => panic!("{case}: expected a refusal first, got {other:?}"),
                }
            }
        }
    });
}

fn wrong_version(path: &Path) {
    let types = frame_types();
    barrage(path, 5, |i, rng, path| {
        let (name, frame) = &types[i % types.len()];
        let mut version = rng.r#gen::<u32>();
        if version == PROTOCOL_VERSION {
            version = PROTOCOL_VERSION + 1;
        }
        let case = format!("wrong-version {version} then {name} #{i}");
        let mut c = RawConn::connect(path);
        // The Hello and the next frame in one write: nothing after the
        // refused Hello may be served.
        let mut bytes =
            framed(&ClientFrame::Hello { protocol_version: version, role: Role::Trainer, client_name: "v".into() });
        bytes.extend(framed(frame));
        send_raw(&mut c.stream, &bytes);
        expect_refused(&mut c, &[&version.to_string(), &format!("version {PROTOCOL_VERSION}")], &case);
    });
}

#[test]
fn every_frame_type_malformed_truncated_oversized_wrong_role_or_wrong_version_is_refused_and_closed() {
    let server = TestServer::start(test_api(), settings());
    let bystanders = Bystanders::start(&server.path);
    let started = Instant::now();
    let classes: [HostileClass; 5] = [
        ("malformed", malformed),
        ("truncated", truncated),
        ("oversized", oversized),
        ("wrong-role", wrong_role),
        ("wrong-version", wrong_version),
    ];
    let threads: Vec<_> = classes
        .into_iter()
        .map(|(name, class)| {
            let path: PathBuf = server.path.clone();
            (name, std::thread::spawn(move || class(&path)))
        })
        .collect();
    for (name, t) in threads {
        t.join().unwrap_or_else(|_| panic!("class {name} failed"));
    }
    let served = bystanders.finish();
    println!(
        "{} hostile connections ({PER_CLASS} per class, 5 classes) refused and closed in {:?}; bystanders completed {served} round trips",
        5 * PER_CLASS,
        started.elapsed()
    );
    assert!(served > 0, "the well-behaved clients were served during the barrage");
    // The daemon is still whole.
    let fresh = server.client(Role::Observer);
    assert_eq!(fresh.status().unwrap().training_run_id.as_deref(), Some(RUN));
    assert_eq!(server.stop().aborted_connections, 0);
}

/// A class of hostile frames: its name and the barrage that sends them.
type HostileClass = (&'static str, fn(&Path));

fn short_timeouts() -> ServerSettings {
    ServerSettings {
        handshake_timeout: Duration::from_millis(300),
        frame_timeout: Duration::from_millis(300),
        idle_timeout: Some(Duration::from_millis(800)),
        ..settings()
    }
}

/// Waits for the close and says how long it took.
fn time_to_close(conn: &mut RawConn, case: &str) -> (Duration, Vec<ServerFrame>) {
    let t0 = Instant::now();
    let frames = drain_until_closed(conn, case);
    (t0.elapsed(), frames)
}

fn closing_message(frames: &[ServerFrame]) -> String {
    match frames.last() {
        Some(ServerFrame::Closing(err)) => err.message.clone(),
        Some(ServerFrame::Refused { reason }) => reason.clone(),
        other => panic!("expected Closing or Refused, got {other:?}"),
    }
}

#[test]
fn stalled_trickled_and_silent_connections_are_reaped_on_their_timeouts() {
    let server = TestServer::start(test_api(), short_timeouts());
    let good = server.client(Role::Controller);
    let frame = framed(&ClientFrame::Request { correlation_id: 1, body: RequestBody::Status });

    // Never sends Hello.
    let mut silent = RawConn::connect(&server.path);
    let (waited, frames) = time_to_close(&mut silent, "no Hello");
    assert!(closing_message(&frames).contains("no Hello within 300 ms"), "{frames:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");

    // Starts a frame and stalls.
    let mut stalled = RawConn::hello(&server.path, Role::Observer);
    send_raw(&mut stalled.stream, &frame[..frame.len() - 1]);
    let (waited, frames) = time_to_close(&mut stalled, "stalled frame");
    assert!(closing_message(&frames).contains("frame not completed within 300 ms"), "{frames:?}");
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(5), "{waited:?}");

    // Trickles a frame one byte at a time, never pausing long: the frame
    // deadline counts from its first byte, not from the last read.
    let mut trickle = RawConn::hello(&server.path, Role::Observer);
    let mut writer = trickle.stream.try_clone().unwrap();
    let big = framed(&ClientFrame::Request {
        correlation_id: 2,
        body: RequestBody::FetchKernel { blueprint_id: "y".repeat(4096) },
    });
    let trickler = std::thread::spawn(move || {
        for b in big {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    let (waited, frames) = time_to_close(&mut trickle, "trickled frame");
    assert!(closing_message(&frames).contains("frame not completed"), "{frames:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    trickler.join().unwrap();

    // Half-open: a handshake, then silence.
    let mut half_open = RawConn::hello(&server.path, Role::Trainer);
    let (waited, frames) = time_to_close(&mut half_open, "idle");
    assert!(closing_message(&frames).contains("idle connection"), "{frames:?}");
    assert!(waited >= Duration::from_millis(700) && waited < Duration::from_secs(5), "{waited:?}");

    // A subscribed observer only reads: never reaped for silence.
    let mut observer = RawConn::hello(&server.path, Role::Observer);
    observer.send(&ClientFrame::Request {
        correlation_id: 9,
        body: RequestBody::SubscribeTelemetry { min_level: TelemetryLevel::Warning },
    });
    assert!(matches!(
        observer.recv().unwrap(),
        ServerFrame::Response { correlation_id: 9, body: Ok(ResponseBody::Subscribed) }
    ));
    std::thread::sleep(Duration::from_millis(1_500));
    observer.send(&ClientFrame::Request { correlation_id: 10, body: RequestBody::Status });
    let answered = loop {
        match observer.recv().unwrap() {
            ServerFrame::Telemetry(_) => continue,
            other => break other,
        }
    };
    assert!(matches!(answered, ServerFrame::Response { correlation_id: 10, body: Ok(_) }), "{answered:?}");

    // A client that stayed silent past the idle limit was closed too (its
    // next write meets the closed socket before it reads the Closing frame).
    assert!(good.status().is_err(), "an idle connection is closed");
    assert!(server.client(Role::Controller).status().is_ok());
    drop(observer);
    assert_eq!(server.stop().aborted_connections, 0);
}

#[test]
fn the_connection_cap_holds_under_a_barrage_and_reaping_frees_slots() {
    const CAP: usize = 4;
    let server = TestServer::start(test_api(), ServerSettings { max_connections: CAP, ..short_timeouts() });
    // Fill the cap with silent peers.
    let squatters: Vec<RawConn> = (0..CAP).map(|_| RawConn::hello(&server.path, Role::Observer)).collect();
    // A barrage of 200 connection attempts while the cap is full: every one refused with the reason.
    let attempts: Vec<_> = (0..4)
        .map(|_| {
            let path = server.path.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let mut c = RawConn::connect(&path);
                    let frames = drain_until_closed(&mut c, "over the cap");
                    match frames.as_slice() {
                        [ServerFrame::Refused { reason }] => assert!(reason.contains("too many connections (limit 4)")),
                        other => panic!("over the cap: {other:?}"),
                    }
                }
            })
        })
        .collect();
    for t in attempts {
        t.join().unwrap();
    }
    // The squatters are reaped as idle; their slots serve new clients.
    for mut s in squatters {
        let (_, frames) = time_to_close(&mut s, "squatter");
        assert!(closing_message(&frames).contains("idle connection"), "{frames:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let c = loop {
        match DaemonClient::connect_unix(&server.path, Role::Observer, "after", Default::default()) {
            Ok(c) => break c,
            Err(ClientError::Refused(_)) if Instant::now() < deadline => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    };
    assert!(c.status().is_ok());
}

/// Registers run-1 over a raw trainer connection.
fn registered_trainer(path: &Path) -> RawConn {
    let mut c = RawConn::hello(path, Role::Trainer);
    c.send(&ClientFrame::Request { correlation_id: 1, body: RequestBody::RegisterHost(registration()) });
    match c.recv().unwrap() {
        ServerFrame::Response { correlation_id: 1, body: Ok(ResponseBody::Registered(_)) } => c,
        other => panic!("registration: {other:?}"),
    }
}

fn expect_bound_refusal(c: &mut RawConn, id: u64, body: RequestBody, needle: &str) {
    c.send(&ClientFrame::Request { correlation_id: id, body });
    let frames = expect_closing(c, "protocol violation", needle);
    match frames.first() {
        Some(ServerFrame::Response { correlation_id, body: Err(err) }) => {
            assert_eq!(*correlation_id, id);
            assert_eq!(err.code, ApiErrorCode::BadRequest);
            assert!(err.message.contains(needle), "{err}");
        }
        other => panic!("expected a refusal naming {needle:?}, got {other:?}"),
    }
}

#[test]
fn a_trainer_connection_is_bound_to_the_run_and_model_it_registered() {
    let server = TestServer::start(test_api(), settings());

    // Reporting for another run.
    let mut c = registered_trainer(&server.path);
    let mut other = step(1);
    other.training_run_id = "run-2".into();
    expect_bound_refusal(&mut c, 2, RequestBody::StepReport(other), "bound to run \"run-1\"");

    // Re-registering another run.
    let mut c = registered_trainer(&server.path);
    let mut reg = registration();
    reg.training_run_id = "run-2".into();
    expect_bound_refusal(&mut c, 2, RequestBody::RegisterHost(reg), "registration of run \"run-2\"");

    // Re-registering another model for the same run (one more slot).
    let mut c = registered_trainer(&server.path);
    let mut reg = registration();
    reg.slots.push(SlotSpec { seed_id: "hidden-9".into(), site: "hidden".into() });
    expect_bound_refusal(&mut c, 2, RequestBody::RegisterHost(reg), "different model");

    // Re-registering the same run and model (a resync) is allowed, and the
    // connection goes on reporting.
    let mut c = registered_trainer(&server.path);
    c.send(&ClientFrame::Request { correlation_id: 2, body: RequestBody::RegisterHost(registration()) });
    assert!(matches!(c.recv().unwrap(), ServerFrame::Response { correlation_id: 2, body: Ok(_) }));
    c.send(&ClientFrame::Request { correlation_id: 3, body: RequestBody::StepReport(step(1)) });
    match c.recv().unwrap() {
        ServerFrame::Response { correlation_id: 3, body } => assert!(body.is_ok(), "{body:?}"),
        other => panic!("{other:?}"),
    }

    // None of the refusals reached the host: it still holds run-1 with its four slots.
    let status = server.client(Role::Observer).status().unwrap();
    assert_eq!(status.training_run_id.as_deref(), Some(RUN));
    assert_eq!(server.client(Role::Observer).seed_states().unwrap().len(), 4);
    drop(c);
    assert_eq!(server.stop().aborted_connections, 0);
}
