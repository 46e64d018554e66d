//! The daemon serves the same trait as the embedded host: every
//! `KasminaApi` call round-trips over a real Unix socket, roles are
//! enforced, and the socket is private.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::sync::Arc;

use kasmina_daemon::{ServeError, UnixSocket};
use leyline::api::{ApiErrorCode, GraftDirective, KasminaApi};
use leyline::protocol::Role;
use leyline::{ReasonCode, SeedOperation, SeedStage, TelemetryLevel};
use support::{BLUEPRINT, SimTrainer, TestServer, command, registration, settings, stage_of, step, test_api};

#[test]
fn every_api_call_round_trips_and_roles_are_enforced() {
    let server = TestServer::start(test_api(), settings());
    let trainer: Arc<dyn KasminaApi> = Arc::new(server.client(Role::Trainer));
    let controller = server.client(Role::Controller);
    let observer = server.client(Role::Observer);

    let err = trainer.step_report(step(1)).unwrap_err();
    assert!(err.message.contains("register"), "{err}");
    trainer.register_host(registration()).unwrap();
    let outcome = controller.submit_command(command("c1", "hidden-0", SeedOperation::Germinate, true)).unwrap();
    assert!(outcome.accepted, "{outcome:?}");
    let replay = controller.submit_command(command("c1", "hidden-0", SeedOperation::Germinate, true)).unwrap();
    assert_eq!(replay.reason, Some(ReasonCode::NonceReplayed));

    // The trainer drives the seed: the verified kernel arrives as an
    // Attach directive, G1 passes once the trainer confirms it.
    let mut sim = SimTrainer::new(100);
    let mut attached = None;
    for _ in 0..3 {
        for d in sim.step(&*trainer) {
            if let GraftDirective::Attach { blueprint_id, artifact_sha256, .. } = d {
                attached = Some((blueprint_id, artifact_sha256));
            }
        }
    }
    let (blueprint, sha) = attached.expect("kernel attached");
    assert_eq!(blueprint, BLUEPRINT);
    assert_eq!(stage_of(&*trainer, "hidden-0"), SeedStage::Training);
    let kernel = trainer.fetch_kernel(BLUEPRINT).unwrap();
    assert_eq!(kernel.sha256, sha);
    assert!(!kernel.bytes.is_empty());
    assert_eq!(trainer.fetch_kernel("bp-none").unwrap_err().code, ApiErrorCode::KernelUnavailable);

    let seeds = observer.seed_states().unwrap();
    assert_eq!(seeds.len(), 4);
    let status = observer.status().unwrap();
    assert_eq!((status.commands_accepted, status.commands_rejected, status.last_step), (1, 1, Some(3)));

    // Roles: each refusal names the role and the request; a request the
    // role may not send is a protocol violation, so that connection closes
    // (tests/hostile_peers.rs) and every refusal here uses its own.
    let err = server.client(Role::Observer).submit_command(command("c3", "hidden-0", SeedOperation::Cull, true));
    let err = err.unwrap_err();
    assert_eq!(err.code, ApiErrorCode::BadRequest);
    assert!(err.message.contains("observer") && err.message.contains("SubmitCommand"), "{err}");
    assert_eq!(
        server
            .client(Role::Trainer)
            .submit_command(command("c4", "hidden-0", SeedOperation::Cull, true))
            .unwrap_err()
            .code,
        ApiErrorCode::BadRequest
    );
    assert_eq!(server.client(Role::Controller).step_report(step(30)).unwrap_err().code, ApiErrorCode::BadRequest);
    assert_eq!(server.client(Role::Observer).register_host(registration()).unwrap_err().code, ApiErrorCode::BadRequest);
    assert_eq!(observer.status().unwrap().seeds, 4);

    // The trainer's drain sees the telemetry published since it connected.
    let events = trainer.drain_telemetry().unwrap();
    assert!(events.iter().any(|e| e.name == "kasmina.command.executed"), "{events:?}");
    assert!(
        events.iter().take_while(|e| e.level == TelemetryLevel::Critical).count() >= 1,
        "CRITICAL first: {events:?}"
    );
    assert!(trainer.drain_telemetry().unwrap().is_empty(), "a drain returns each event once");
    drop((trainer, controller, observer));
    assert_eq!(server.stop().aborted_connections, 0);
}

#[test]
fn socket_is_created_0600_and_removed_on_shutdown() {
    let server = TestServer::start(test_api(), settings());
    let meta = std::fs::metadata(&server.path).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let path = server.path.clone();
    server.stop();
    assert!(!path.exists(), "socket file removed after shutdown");
}

#[test]
fn a_live_socket_is_not_stolen_a_stale_one_is_replaced_other_files_are_kept() {
    let server = TestServer::start(test_api(), settings());
    assert!(matches!(UnixSocket::bind(&server.path), Err(ServeError::AlreadyServing(_))));
    server.client(Role::Observer).status().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap()); // file left, nobody listening
    assert!(stale.exists());
    let socket = UnixSocket::bind(&stale).unwrap();
    assert_eq!(std::fs::metadata(&stale).unwrap().permissions().mode() & 0o777, 0o600);
    drop(socket);

    let regular = dir.path().join("not-a-socket");
    std::fs::write(&regular, b"data").unwrap();
    assert!(matches!(UnixSocket::bind(&regular), Err(ServeError::NotASocket(_))));
    assert_eq!(std::fs::read(&regular).unwrap(), b"data");
}

#[test]
fn loopback_tcp_serves_the_same_api_and_other_addresses_are_refused() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = rt.block_on(kasmina_daemon::bind_tcp("127.0.0.1:0".parse().unwrap())).unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(kasmina_daemon::run(listener, test_api(), settings(), async {
        let _ = rx.await;
    }));
    let client = kasmina_client::DaemonClient::connect_tcp(addr, Role::Trainer, "tcp", Default::default()).unwrap();
    client.register_host(registration()).unwrap();
    assert_eq!(client.status().unwrap().training_run_id.as_deref(), Some("run-1"));
    drop(client);
    tx.send(()).unwrap();
    assert_eq!(rt.block_on(server).unwrap().unwrap().aborted_connections, 0);
    let public = rt.block_on(kasmina_daemon::bind_tcp("0.0.0.0:0".parse().unwrap()));
    assert!(matches!(public, Err(ServeError::NotLoopback(_))));
}
