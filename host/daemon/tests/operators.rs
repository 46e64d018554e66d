//! Issue 16 with the real binary: errors that say what to do (once), CLI
//! output for people and for scripts, terminal manners, and the HTTP side
//! (OpenMetrics names, the status page and its live stream).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use support::daemon_process::{Daemon, DaemonFiles, cli};

fn examples(file: &str) -> String {
    format!("{}/../../examples/commands/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn kasmina() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kasmina"))
}

fn get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn free_port() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

/// `kasmina serve` that must fail: (stderr, exit code).
fn failed_start(args: &[&str], env: &[(&str, &str)]) -> (String, i32) {
    let dir = tempfile::tempdir().unwrap();
    let out = kasmina()
        .arg("serve")
        .arg("--socket")
        .arg(dir.path().join("s.sock"))
        .args(args)
        .env_remove("KASMINA_URZA")
        .env_remove("KASMINA_HMAC_KEY")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (String::from_utf8_lossy(&out.stderr).into_owned(), out.status.code().unwrap_or(-1))
}

#[test]
fn misleading_errors_a_plugin_failure_gets_a_plugin_hint_not_reload_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not a component").unwrap();
    let settings = dir.path().join("bad-plugin.toml");
    let text = std::fs::read_to_string(&files.settings).unwrap();
    std::fs::write(&settings, format!("{text}\n[plugins.gates]\npath = {:?}\nsha256 = \"{}\"\n", junk, "0".repeat(64)))
        .unwrap();
    let (err, code) = failed_start(
        &["--settings", settings.to_str().unwrap(), "--urza", files.urza.to_str().unwrap()],
        &[("RUST_LOG", "debug")],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("gate plugin") && err.contains("hint:") && err.contains("kasmina plugin check"), "{err}");
    assert!(!err.contains("reload refused"), "a first load is not a reload: {err}");
    assert!(!err.contains("--key-file") && !err.contains("--journal"), "a plugin failure gets a plugin hint: {err}");
    // Terminal manners: stderr is a pipe here, so no ANSI colour even with logging on.
    assert!(!err.contains('\u{1b}'), "ANSI escape written to a pipe: {err:?}");
}

#[test]
fn misleading_errors_no_urza_names_the_flag_not_an_internal_api() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let (err, code) = failed_start(&["--key-file", files.key_file.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(!err.contains("HostBuilder"), "{err}");
    assert!(err.contains("--urza DIR"), "{err}");
}

#[test]
fn misleading_errors_a_cause_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such.key");
    let (err, code) = failed_start(&["--key-file", missing.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
    assert!(err.contains("hint: create one with `kasmina keygen <file>`"), "{err}");
}

#[test]
fn terminal_manners_no_colour_under_no_color_or_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let mut child = kasmina()
        .args(["serve", "--settings", files.settings.to_str().unwrap(), "--urza", files.urza.to_str().unwrap()])
        .arg("--socket")
        .arg(&files.socket)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready).unwrap();
    assert!(ready.starts_with("ready:"), "{ready}");
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    child.wait().unwrap();
    assert!(err.contains("INFO") || err.contains("kasmina:"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn operator_session_json_listings_local_times_clear_send_output_and_the_http_side() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let metrics = free_port();
    let daemon = Daemon::start(&files, &["--metrics", &metrics]);
    let socket = files.socket.to_str().unwrap();
    let key = files.key_file.to_str().unwrap();

    let (code, out, err) = cli(&["register", &examples("registration.toml"), "--socket", socket]);
    assert_eq!(code, 0, "{out}{err}");
    // The telemetry follower runs while the command is sent.
    let follower =
        kasmina().args(["telemetry", "--wait-ms", "4000", "--socket", socket]).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (code, out, _) = cli(&["send", &examples("germinate.toml"), "--key-file", key, "--socket", socket]);
    assert_eq!(code, 0, "{out}");
    // The outcome's reason and the attributes are told apart.
    assert!(out.contains("\n  attributes:\n    ") && out.contains("blend_mode = RESIDUAL"), "{out}");
    let (code, out, _) = cli(&["send", &examples("germinate.toml"), "--key-file", key, "--socket", socket]);
    assert!(code == 1 && out.contains("  outcome reason: invalid_stage"), "{out}");
    let (_, out, _) = cli(&["send", &examples("germinate.toml"), "--key-file", key, "--socket", socket, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["outcome"]["accepted"], serde_json::json!(false), "{out}");

    let telemetry = follower.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&telemetry.stdout);
    let line = text.lines().find(|l| l.contains("kasmina.")).unwrap_or_else(|| panic!("no events: {text}"));
    // Local RFC 3339 with milliseconds and an offset, not epoch ms.
    let stamp = line.split(' ').next().unwrap();
    assert!(stamp.len() == 29 && stamp.as_bytes()[10] == b'T' && stamp.as_bytes()[19] == b'.', "{line}");

    // --json on every listing verb.
    for args in [
        vec!["status", "--socket", socket, "--json"],
        vec!["seeds", "--socket", socket, "--json"],
        vec!["urza", "list", "--urza", files.urza.to_str().unwrap(), "--json"],
        vec!["urza", "verify", "--urza", files.urza.to_str().unwrap(), "--json"],
    ] {
        let (code, out, err) = cli(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap_or_else(|e| panic!("{args:?}: {e}\n{out}"));
    }

    // The HTTP side: OpenMetrics names, the page, its JSON and its stream.
    let body = get(&metrics, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    for needle in [
        "application/openmetrics-text",
        "kasmina_commands_total{outcome=\"accepted\"} 1",
        "kasmina_kernel_load_seconds_total ",
        "# TYPE kasmina_gate_plugin_call_seconds histogram",
        "kasmina_gate_plugin_call_seconds_bucket{le=\"+Inf\"}",
        "kasmina_journal_fsync_seconds_total ",
        "kasmina_security_accepted_total 3",
        "kasmina_seeds_by_stage{stage=\"GERMINATED\"} 1",
        "# EOF",
    ] {
        assert!(body.contains(needle), "{needle} missing from:\n{body}");
    }
    assert!(!body.contains("_us"), "microsecond names are gone:\n{body}");
    // Lagging numbers: the kernel loaded for the germination is counted at once.
    assert!(body.contains("kasmina_kernel_cache_entries 1"), "{body}");
    let page = get(&metrics, "/");
    assert!(page.starts_with("HTTP/1.1 200 OK") && page.contains("<title>Kasmina status</title>"), "{page}");
    assert!(!page.contains("http://") && !page.contains("https://"), "the page loads nothing from elsewhere");
    let state = get(&metrics, "/api/state");
    assert!(state.contains("\"stage_name\":\"GERMINATED\"") && state.contains("\"gate\":\"G0\""), "{state}");
    // Read-only: anything but GET is refused.
    let mut s = std::net::TcpStream::connect(&metrics).unwrap();
    write!(s, "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    let mut sse = std::net::TcpStream::connect(&metrics).unwrap();
    write!(sse, "GET /events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut reader = BufReader::new(sse);
    let mut head = String::new();
    while !head.contains("data: {") {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "stream ended: {head}");
        head.push_str(&line);
    }
    assert!(head.contains("text/event-stream") && head.contains("event: state"), "{head}");

    assert!(daemon.terminate().success());
    let journal = files.journal.to_str().unwrap();
    let (code, out, _) = cli(&["journal", "inspect", journal, "--json"]);
    assert_eq!(code, 0);
    for line in out.lines() {
        serde_json::from_str::<serde_json::Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    // Human journal lines carry local RFC 3339 times too.
    let (_, out, _) = cli(&["journal", "inspect", journal]);
    let record = out.lines().nth(1).unwrap_or_default();
    let stamp = record.split_whitespace().nth(1).unwrap_or_default();
    assert!(stamp.len() == 29 && stamp.as_bytes()[10] == b'T', "{record}");
}

#[test]
fn terminal_manners_journal_inspect_into_a_closed_pipe_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let daemon = Daemon::start(&files, &[]);
    let socket = files.socket.to_str().unwrap();
    let (code, _, _) = cli(&["register", &examples("registration.toml"), "--socket", socket]);
    assert_eq!(code, 0);
    assert!(daemon.terminate().success());
    // `| head -1`: the reader goes away after one line.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "for i in 1 2 3 4 5 6 7 8; do \"$0\" journal inspect {} --inputs; done | head -c 1 >/dev/null",
            files.journal.display()
        ))
        .arg(env!("CARGO_BIN_EXE_kasmina"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("Broken pipe"), "{err}");
}

/// The read-only HTTP side binds beyond loopback only when asked
/// (`--metrics-public`), with a warning; without the flag such an address
/// is refused naming it.
#[test]
fn the_http_side_binds_beyond_loopback_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let files = DaemonFiles::create(dir.path());
    let port = std::net::TcpListener::bind("0.0.0.0:0").unwrap().local_addr().unwrap().port();
    let everywhere = format!("0.0.0.0:{port}");
    let refused = files
        .serve_command(std::path::Path::new(env!("CARGO_BIN_EXE_kasmina")))
        .args(["--metrics", &everywhere])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && err.contains("--metrics-public"), "{err}");

    let daemon = Daemon::start(&files, &["--metrics", &everywhere, "--metrics-public"]);
    let body = get(&format!("127.0.0.1:{port}"), "/metrics");
    assert!(body.starts_with("HTTP/1.1 200") && body.contains("kasmina_commands_total"), "{body}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut warned = daemon.start_report.contains("without authentication");
    while !warned {
        match daemon.stderr.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(line) => warned = line.contains("without authentication"),
            Err(_) => break,
        }
    }
    assert!(warned, "no warning in {}", daemon.start_report);
    assert!(daemon.terminate().success());
}
