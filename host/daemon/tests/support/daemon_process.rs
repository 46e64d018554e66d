//! The real `kasmina` binary as a child process, for crash and CLI tests.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Paths of a daemon set-up: Urza with fixtures, key file, settings file.
pub struct DaemonFiles {
    pub root: PathBuf,
    pub urza: PathBuf,
    pub key_file: PathBuf,
    pub settings: PathBuf,
    pub socket: PathBuf,
    pub journal: PathBuf,
}

impl DaemonFiles {
    /// `kasmina serve` (the binary at `binary`) over these files.
    pub fn serve_command(&self, binary: &Path) -> Command {
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .arg("--settings")
            .arg(&self.settings)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--urza")
            .arg(&self.urza)
            .arg("--journal")
            .arg(&self.journal);
        command
    }

    /// Raises the plugin deadline in the settings file: for tests that
    /// start the daemon dozens of times on two shared cores, where the
    /// start-up canary must not time out for the machine's sake.
    pub fn with_patient_plugins(self) -> Self {
        let text = std::fs::read_to_string(&self.settings).unwrap();
        std::fs::write(&self.settings, text.replace("deadline_ms = 250", "deadline_ms = 2000")).unwrap();
        self
    }

    pub fn create(root: &Path) -> Self {
        let urza = super::urza(root);
        let key_file = root.join("kasmina.key");
        std::fs::write(&key_file, super::KEY_HEX).unwrap();
        let settings = root.join("kasmina.toml");
        let cache = super::plugin_cache();
        let text = super::SETTINGS
            .replace("[plugins]\n", &format!("[plugins]\ncache_dir = {:?}\n", cache.display().to_string()));
        std::fs::write(&settings, format!("[security]\nkey_file = {:?}\n{text}", key_file.display().to_string()))
            .unwrap();
        DaemonFiles {
            root: root.to_owned(),
            urza,
            key_file,
            settings,
            socket: root.join("kasminad.sock"),
            journal: root.join("journal"),
        }
    }
}

/// A running `kasmina serve`.
pub struct Daemon {
    pub child: Child,
    /// Everything it printed on stderr before `ready` (the start report).
    pub start_report: String,
    /// Every later stderr line, as it is printed; the channel ends when the
    /// process has exited and its stderr is read to the end.
    pub stderr: std::sync::mpsc::Receiver<String>,
}

impl Daemon {
    /// Starts `kasmina serve` and waits for its `ready:` line.
    pub fn start(files: &DaemonFiles, extra: &[&str]) -> Daemon {
        Self::start_binary(Path::new(env!("CARGO_BIN_EXE_kasmina")), files, extra)
    }

    /// Like [`Daemon::start`], with the binary at `binary` (a copy elsewhere).
    pub fn start_binary(binary: &Path, files: &DaemonFiles, extra: &[&str]) -> Daemon {
        let mut child = files
            .serve_command(binary)
            .args(extra)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining after the test stops listening: a closed pipe
            // would make the daemon's own eprintln! fail.
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut lines = BufReader::new(stdout).lines();
        let ready = lines.next().and_then(Result::ok).unwrap_or_default();
        let mut start_report = Vec::new();
        // The report is printed before `ready`; its reader thread may lag.
        while let Ok(line) = rx.recv_timeout(std::time::Duration::from_secs(5)) {
            let done = line.contains("kasmina: journal:");
            start_report.push(line);
            if done {
                break;
            }
        }
        assert!(ready.starts_with("ready: listening on"), "daemon did not start: {ready:?}; stderr: {start_report:?}");
        Daemon { child, start_report: start_report.join("\n"), stderr: rx }
    }

    /// SIGHUP: re-read the settings file and reload changed plugins.
    pub fn hangup(&self) {
        let status = Command::new("kill").arg("-HUP").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// SIGKILL and wait, then every stderr line printed after the start
    /// report (all of it: the process is gone and its pipe read to the end).
    pub fn kill_and_read_stderr(mut self) -> Vec<String> {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.stderr.iter().collect()
    }

    /// SIGKILL: no shutdown path runs.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait: the graceful path; returns the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let status = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }
}

/// Runs the CLI to completion; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kasmina")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
