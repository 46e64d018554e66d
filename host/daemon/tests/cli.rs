//! The README's by-hand session, run with the real binary: keygen, urza
//! publish, serve (with /metrics), register, send the example GERMINATE,
//! seeds, status, journal inspect, SIGTERM; plus the offline plugin verbs.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;

use support::daemon_process::{Daemon, DaemonFiles, cli};

fn examples(file: &str) -> String {
    format!("{}/../../examples/commands/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn by_hand_session_keygen_publish_serve_register_send_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let root = dir.path();
    let key = root.join("operator.key");
    let key_s = key.to_str().unwrap();
    let (code, out, _) = cli(&["keygen", key_s]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&key).unwrap().trim().len(), 64);
    let (code, _, err) = cli(&["keygen", key_s]);
    assert_ne!(code, 0);
    assert!(err.contains("never overwrites"), "{err}");

    let urza = root.join("urza2");
    let descriptor = examples("mlp_adapter_64.descriptor.json");
    let kernel = format!("{}/../kernels/fixtures/mlp_adapter_64.pt", env!("CARGO_MANIFEST_DIR"));
    let (code, out, err) = cli(&["urza", "publish", &descriptor, &kernel, "--urza", urza.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, _) = cli(&["urza", "list", "--urza", urza.to_str().unwrap()]);
    assert!(code == 0 && out.contains("mlp_adapter_64"), "{out}");
    let (code, out, _) = cli(&["urza", "verify", "--urza", urza.to_str().unwrap()]);
    assert!(code == 0 && out.contains("1 of 1 artifacts verified"), "{out}");

    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics = format!("127.0.0.1:{port}");
    let files = DaemonFiles { urza, ..files };
    let daemon = Daemon::start(&files, &["--key-file", key_s, "--metrics", &metrics]);
    let socket = files.socket.to_str().unwrap();

    let (code, out, err) = cli(&["register", &examples("registration.toml"), "--socket", socket]);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&["send", &examples("germinate.toml"), "--key-file", key_s, "--socket", socket]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("accepted: command cli-"), "{out}");
    let (code, out, _) = cli(&["seeds", "--socket", socket]);
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.starts_with("hidden-0")).unwrap();
    assert!(line.contains("GERMINATED") && line.contains("mlp_adapter_64") && line.contains("RESIDUAL"), "{out}");
    // Same file again: a fresh command id, but the seed is no longer dormant.
    let (code, out, _) = cli(&["send", &examples("germinate.toml"), "--key-file", key_s, "--socket", socket]);
    assert!(code == 1 && out.contains("REJECTED") && out.contains("invalid_stage"), "{out}");
    // A wrong key is refused by the daemon's envelope check.
    let (code, out, _) =
        cli(&["send", &examples("cull.json"), "--key-file", files.key_file.to_str().unwrap(), "--socket", socket]);
    assert!(code == 1 && out.contains("invalid_signature"), "{out}");
    let (code, out, _) = cli(&["status", "--socket", socket]);
    assert!(code == 0 && out.contains("1 accepted, 2 rejected"), "{out}");

    let body = get(&metrics, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    for needle in [
        "kasmina_commands_total{outcome=\"accepted\"} 1",
        "kasmina_kernel_cache_events_total{event=\"hit\"}",
        "kasmina_breaker_state{breaker=\"fetch\",state=\"CLOSED\"} 1",
        "kasmina_gate_plugin_call_seconds_count",
        "kasmina_rollback_fast_within_sla_total",
        "kasmina_journal_fsyncs_total",
        "kasmina_security_rejected_total{reason=\"invalid_signature\"} 1",
    ] {
        assert!(body.contains(needle), "{needle} missing from:\n{body}");
    }
    assert!(get(&metrics, "/other").starts_with("HTTP/1.1 404"));

    let (code, out, _) = cli(&["journal", "inspect", files.journal.to_str().unwrap()]);
    assert!(code == 0 && out.contains("command_accepted") && out.contains("hidden-0 DORMANT -> GERMINATED"), "{out}");
    assert!(daemon.terminate().success());
    assert!(!files.socket.exists(), "socket removed on shutdown");

    let (code, out, _) = cli(&["journal", "inspect", files.journal.to_str().unwrap(), "--kind", "snapshot"]);
    assert!(code == 0 && out.contains("snapshot") && !out.contains("transition "), "{out}");
    let (code, out, _) = cli(&["journal", "inspect", root.join("nothing").to_str().unwrap()]);
    assert_ne!(code, 0, "{out}");
}

#[test]
fn plugin_verbs_check_and_describe_components() {
    let cache = support::plugin_cache();
    let cache = cache.to_str().unwrap();
    let (code, out, err) = cli(&["plugin", "info", kasmina_plugin_artifacts::EXAMPLE_CUSTOM_GATE, "--cache", cache]);
    assert!(code == 0 && out.contains("implements:") && out.contains("gate"), "{out}{err}");
    let (code, out, _) = cli(&["plugin", "check", kasmina_plugin_artifacts::GATES, "--quick", "--cache", cache]);
    assert!(code == 0 && out.contains("RESULT PASS"), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not a component").unwrap();
    let (code, out, _) = cli(&["plugin", "check", junk.to_str().unwrap(), "--cache", cache]);
    assert!(code != 0 && out.contains("RESULT FAIL"), "{out}");
}
