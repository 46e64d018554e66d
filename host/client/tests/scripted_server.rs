//! DaemonClient against a scripted server: a plain std thread speaking the
//! protocol through this crate's own codec, so the client's handshake,
//! request/answer matching, failure handling and telemetry stream are
//! tested without building the daemon (and its tokio, libtorch, wasmtime).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;

use kasmina_client::codec::{DEFAULT_MAX_REQUEST_BYTES, encode_frame, read_frame_blocking};
use kasmina_client::{ClientError, ClientSettings, CommandBuilder, DaemonClient, FrameDecoder, HmacKey};
use leyline::api::{ApiError, ApiErrorCode, HostStatus, KasminaApi};
use leyline::command::canonical_bytes;
use leyline::protocol::{ClientFrame, PROTOCOL_VERSION, RequestBody, ResponseBody, Role, ServerFrame};
use leyline::{Outcome, ReasonCode, SeedOperation, TelemetryEvent, TelemetryLevel};

/// The server side of one connection.
struct Peer {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    decoder: FrameDecoder,
}

impl Peer {
    fn recv(&mut self) -> ClientFrame {
        read_frame_blocking(&mut self.reader, &mut self.decoder).unwrap()
    }

    fn send(&mut self, frame: &ServerFrame) {
        let mut bytes = Vec::new();
        encode_frame(frame, u32::MAX, &mut bytes).unwrap();
        self.writer.write_all(&bytes).unwrap();
    }

    /// Reads Hello and answers Welcome; returns the declared role.
    fn welcome(&mut self) -> Role {
        let ClientFrame::Hello { protocol_version, role, .. } = self.recv() else { panic!("expected Hello") };
        assert_eq!(protocol_version, PROTOCOL_VERSION);
        self.send(&ServerFrame::Welcome { protocol_version: PROTOCOL_VERSION, server: "scripted".into() });
        role
    }

    fn request(&mut self) -> (u64, RequestBody) {
        match self.recv() {
            ClientFrame::Request { correlation_id, body } => (correlation_id, body),
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn answer(&mut self, correlation_id: u64, body: Result<ResponseBody, ApiError>) {
        self.send(&ServerFrame::Response { correlation_id, body });
    }
}

/// Serves one connection with `script` on a loopback port.
fn serve_one(script: impl FnOnce(Peer) + Send + 'static) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        script(Peer { reader, writer: stream, decoder: FrameDecoder::new(DEFAULT_MAX_REQUEST_BYTES) });
    });
    (addr, handle)
}

fn status() -> HostStatus {
    HostStatus {
        contract_version: leyline::CONTRACT_VERSION,
        training_run_id: Some("run-1".into()),
        seeds: 4,
        commands_accepted: 0,
        commands_rejected: 0,
        last_step: None,
    }
}

#[test]
fn signed_commands_and_queries_round_trip() {
    let key = HmacKey::from_bytes(&[7; 32]).unwrap();
    let server_key = key.clone();
    let (addr, server) = serve_one(move |mut peer| {
        assert_eq!(peer.welcome(), Role::Controller);
        let (id, body) = peer.request();
        assert!(matches!(body, RequestBody::Status));
        peer.answer(id, Ok(ResponseBody::Status(status())));
        let (id, body) = peer.request();
        let RequestBody::SubmitCommand(cmd) = body else { panic!("expected a command") };
        let genuine = cmd.signature.as_deref().is_some_and(|sig| server_key.verify(&canonical_bytes(&cmd), sig));
        let outcome =
            if genuine { Outcome::accepted() } else { Outcome::rejected(ReasonCode::InvalidSignature, "bad") };
        peer.answer(id, Ok(ResponseBody::CommandOutcome(outcome)));
        let (id, _) = peer.request();
        peer.answer(id, Err(ApiError::new(ApiErrorCode::NotFound, "no such seed")));
    });
    let client = DaemonClient::connect_tcp(addr, Role::Controller, "test", ClientSettings::default()).unwrap();
    assert_eq!((client.server(), client.role()), ("scripted", Role::Controller));
    assert_eq!(client.status().unwrap(), status());
    let cmd = CommandBuilder::seed("hidden-0", SeedOperation::Germinate, "bp").sign(&key);
    assert!(client.submit_command(cmd).unwrap().accepted);
    // A domain error from the server is returned as is and leaves the connection usable.
    assert_eq!(client.seed_states().unwrap_err().code, ApiErrorCode::NotFound);
    server.join().unwrap();
}

#[test]
fn a_mismatched_answer_breaks_the_connection_for_good() {
    let (addr, server) = serve_one(|mut peer| {
        peer.welcome();
        let (id, _) = peer.request();
        peer.answer(id + 1, Ok(ResponseBody::Status(status())));
    });
    let client = DaemonClient::connect_tcp(addr, Role::Observer, "test", ClientSettings::default()).unwrap();
    let err = client.status().unwrap_err();
    assert_eq!(err.code, ApiErrorCode::Transport);
    assert!(err.message.contains("while waiting for 1"), "{err}");
    let again = client.status().unwrap_err();
    assert!(again.message.contains("unusable after an earlier failure"), "{again}");
    server.join().unwrap();
}

#[test]
fn refusal_and_closing_are_reported_with_the_servers_reason() {
    let (addr, server) = serve_one(|mut peer| {
        let _ = peer.recv();
        peer.send(&ServerFrame::Refused { reason: "too many connections".into() });
    });
    match DaemonClient::connect_tcp(addr, Role::Trainer, "test", ClientSettings::default()) {
        Err(ClientError::Refused(reason)) => assert_eq!(reason, "too many connections"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    server.join().unwrap();

    let (addr, server) = serve_one(|mut peer| {
        peer.welcome();
        let _ = peer.request();
        peer.send(&ServerFrame::Closing(ApiError::new(ApiErrorCode::ShuttingDown, "bye")));
    });
    let client = DaemonClient::connect_tcp(addr, Role::Trainer, "test", ClientSettings::default()).unwrap();
    assert_eq!(client.status().unwrap_err().code, ApiErrorCode::ShuttingDown);
    server.join().unwrap();
}

#[test]
fn telemetry_stream_yields_pushed_events_then_ends_at_close() {
    let (addr, server) = serve_one(|mut peer| {
        peer.welcome();
        let (id, body) = peer.request();
        assert!(matches!(body, RequestBody::SubscribeTelemetry { min_level: TelemetryLevel::Warning }));
        peer.answer(id, Ok(ResponseBody::Subscribed));
        for n in 0..3 {
            peer.send(&ServerFrame::Telemetry(TelemetryEvent::new("e", TelemetryLevel::Critical, "m", n)));
        }
        // Dropping the peer closes the socket between frames: a clean end.
    });
    let client = DaemonClient::connect_tcp(addr, Role::Observer, "test", ClientSettings::default()).unwrap();
    let stream = client.subscribe_telemetry(TelemetryLevel::Warning).unwrap();
    let stamps: Vec<u64> = stream.map(|e| e.unwrap().timestamp_ms).collect();
    assert_eq!(stamps, [0, 1, 2]);
    server.join().unwrap();
}

#[test]
fn connecting_to_nothing_names_the_address() {
    let path = std::env::temp_dir().join(format!("kasmina-client-absent-{}.sock", std::process::id()));
    match DaemonClient::connect_unix(&path, Role::Observer, "test", ClientSettings::default()) {
        Err(ClientError::Connect { addr, .. }) => assert_eq!(addr, path.display().to_string()),
        other => panic!("expected a connect error, got {other:?}"),
    }
}
