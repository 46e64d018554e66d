//! Bad clients hurt only themselves: malformed frames (oversized, truncated,
//! garbage, wrong version, no Hello) get a reason and a close while the
//! daemon keeps serving everyone else; many concurrent clients lose nothing;
//! the connection limit refuses with a reason.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::time::{Duration, Instant};

use kasmina_client::{ClientError, DaemonClient, FrameError};
use kasmina_daemon::ServerSettings;
use leyline::api::{ApiErrorCode, KasminaApi};
use leyline::protocol::{ClientFrame, RequestBody, ResponseBody, Role, ServerFrame};
use support::{RawConn, TestServer, registration, settings, step, test_api, transport_api};

fn expect_closing(conn: &mut RawConn, needle: &str) {
    match conn.recv() {
        Ok(ServerFrame::Closing(err)) => {
            assert_eq!(err.code, ApiErrorCode::BadRequest);
            assert!(err.message.contains(needle), "{err}");
        }
        other => panic!("expected Closing, got {other:?}"),
    }
    assert!(matches!(conn.recv(), Err(FrameError::Eof)), "connection closed after Closing");
}

fn expect_refused(conn: &mut RawConn, needles: &[&str]) {
    match conn.recv() {
        Ok(ServerFrame::Refused { reason }) => {
            for n in needles {
                assert!(reason.contains(n), "{reason:?} lacks {n:?}");
            }
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    assert!(matches!(conn.recv(), Err(FrameError::Eof)));
}

#[test]
fn malformed_frames_close_only_the_offending_client() {
    let server = TestServer::start(test_api(), settings());
    let good = server.client(Role::Observer);
    assert_eq!(good.status().unwrap().seeds, 0);

    // Oversized: refused from the length prefix alone.
    let mut c = RawConn::hello(&server.path, Role::Observer);
    c.send_bytes(&u32::MAX.to_be_bytes());
    expect_closing(&mut c, "exceeds the maximum");
    assert_eq!(good.status().unwrap().seeds, 0);

    // Garbage: a plausible length, bytes that are no frame.
    let mut c = RawConn::hello(&server.path, Role::Observer);
    c.send_bytes(&[0, 0, 0, 6, 0xFF, 0xFE, 0xFD, 0xFC, 0xFB, 0xFA]);
    expect_closing(&mut c, "does not decode");
    assert_eq!(good.status().unwrap().seeds, 0);

    // Truncated: half a frame, then the client stops sending.
    let mut c = RawConn::hello(&server.path, Role::Observer);
    let mut frame = Vec::new();
    kasmina_client::codec::encode_frame(
        &ClientFrame::Request { correlation_id: 1, body: RequestBody::Status },
        1024,
        &mut frame,
    )
    .unwrap();
    c.send_bytes(&frame[..frame.len() - 1]);
    c.stream.shutdown(std::net::Shutdown::Write).unwrap();
    expect_closing(&mut c, "inside a frame");

    // Wrong protocol version: both versions named.
    let mut c = RawConn::connect(&server.path);
    c.send(&ClientFrame::Hello { protocol_version: 999, role: Role::Trainer, client_name: "old".into() });
    expect_refused(&mut c, &["999", &format!("version {}", leyline::protocol::PROTOCOL_VERSION)]);

    // A request before Hello, and an oversized Hello.
    let mut c = RawConn::connect(&server.path);
    c.send(&ClientFrame::Request { correlation_id: 1, body: RequestBody::Status });
    expect_refused(&mut c, &["first frame must be Hello"]);
    let mut c = RawConn::connect(&server.path);
    c.send_bytes(&(64u32 << 20).to_be_bytes());
    expect_refused(&mut c, &["exceeds the maximum"]);

    // A second Hello is a protocol violation too.
    let mut c = RawConn::hello(&server.path, Role::Observer);
    c.send(&ClientFrame::Hello { protocol_version: 1, role: Role::Controller, client_name: "escalate".into() });
    expect_closing(&mut c, "second Hello");

    // The daemon still serves the old client and new ones.
    assert_eq!(good.status().unwrap().seeds, 0);
    assert_eq!(server.client(Role::Trainer).status().unwrap().seeds, 0);
    assert_eq!(server.stop().aborted_connections, 0);
}

const CLIENTS: usize = 8;
const MESSAGES: u64 = 10_000;

#[test]
fn eight_pipelined_clients_times_ten_thousand_messages_lose_nothing() {
    // Step numbers from 8 pipelined clients interleave; the real host
    // (rightly) refuses out-of-order steps, so this measures the transport.
    let server = TestServer::start(transport_api(), settings());
    server.client(Role::Trainer).register_host(registration()).unwrap();
    let started = Instant::now();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let path = server.path.clone();
            std::thread::spawn(move || {
                let mut conn = RawConn::hello(&path, Role::Trainer);
                let mut tx = conn.try_clone();
                // Writer runs ahead of the reader: the daemon's bounded queues
                // push back through the socket instead of buffering.
                let writer = std::thread::spawn(move || {
                    for id in 0..MESSAGES {
                        let body = if id % 2 == 0 { RequestBody::StepReport(step(id)) } else { RequestBody::Status };
                        tx.send(&ClientFrame::Request { correlation_id: id, body });
                    }
                });
                for expected in 0..MESSAGES {
                    match conn.recv().unwrap() {
                        ServerFrame::Response { correlation_id, body } => {
                            assert_eq!(correlation_id, expected, "client {k}: answers arrive in request order");
                            let ok = matches!(body, Ok(ResponseBody::Directives(_)) | Ok(ResponseBody::Status(_)));
                            assert!(ok, "client {k} request {expected}: {body:?}");
                        }
                        other => panic!("client {k}: unexpected {other:?}"),
                    }
                }
                writer.join().unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = started.elapsed();
    println!("{} round trips in {elapsed:?}", CLIENTS as u64 * MESSAGES);
    let status = server.client(Role::Observer).status().unwrap();
    assert!(status.last_step.is_some());
    assert_eq!(server.stop().aborted_connections, 0);
}

#[test]
fn connections_over_the_limit_are_refused_with_a_reason() {
    let server = TestServer::start(test_api(), ServerSettings { max_connections: 2, ..settings() });
    let a = server.client(Role::Observer);
    let b = server.client(Role::Observer);
    match DaemonClient::connect_unix(&server.path, Role::Observer, "third", Default::default()) {
        Err(ClientError::Refused(reason)) => assert!(reason.contains("too many connections (limit 2)"), "{reason}"),
        other => panic!("expected refusal, got {other:?}"),
    }
    assert_eq!(a.status().unwrap().seeds, 0);
    drop(b);
    // The slot frees once the server has seen the close; bounded retry.
    let deadline = Instant::now() + Duration::from_secs(10);
    let c = loop {
        match DaemonClient::connect_unix(&server.path, Role::Observer, "again", Default::default()) {
            Ok(c) => break c,
            Err(ClientError::Refused(_)) if Instant::now() < deadline => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(c.status().unwrap().seeds, 0);
}
