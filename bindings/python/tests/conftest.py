"""Real parts only: the real ``kasmina serve`` binary on a temporary Unix
socket, real blueprints published with ``kasmina urza publish``, real
TorchScript kernels, real torch. ``scripts/test.sh`` builds the binary and
sets ``KASMINA_BIN``; without it these tests refuse to run rather than skip.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import signal
import subprocess
import time
from typing import Dict, List, Optional

import pytest

import kasmina

REPO = pathlib.Path(__file__).resolve().parents[3]
MLP_ADAPTER = (
    REPO / "examples/commands/mlp_adapter_64.descriptor.json",
    REPO / "host/kernels/fixtures/mlp_adapter_64.pt",
)
UNSTABLE = (
    REPO / "examples/digits/blueprints/unstable_64.descriptor.json",
    REPO / "examples/digits/blueprints/unstable_64.pt",
)

#: A short lifecycle: a seed goes GERMINATED → FOSSILIZED in ~15 steps.
FAST_SETTINGS = """
[lifecycle]
attach_timeout_steps = 5
training_steps = 3
blend_steps = 4
shadow_steps = 2
probation_steps = 2
[gates]
latency_budget_us = 200000
metric_tolerance = 0.5
[plugins]
deadline_ms = 250
"""


def _required_file(var: str, what: str) -> pathlib.Path:
    value = os.environ.get(var)
    if not value:
        raise pytest.UsageError(
            f"{var} is not set: it must point at {what}. Run the suite with scripts/test.sh, which builds it "
            f"and sets {var}."
        )
    path = pathlib.Path(value)
    if not path.is_file():
        raise pytest.UsageError(f"{var}={value}: no such file ({what}); run scripts/test.sh")
    return path


@pytest.fixture(scope="session")
def kasmina_bin() -> pathlib.Path:
    return _required_file("KASMINA_BIN", "the `kasmina` binary (cargo build -p kasmina-daemon)")


def run_cli(kasmina_bin: pathlib.Path, *args: str) -> str:
    done = subprocess.run([str(kasmina_bin), *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"kasmina {' '.join(args)} failed ({done.returncode}): {done.stderr}{done.stdout}")
    return done.stdout


@pytest.fixture(scope="session")
def urza_template(kasmina_bin, tmp_path_factory) -> pathlib.Path:
    """An Urza library with the demo blueprints, published once per session."""
    urza = tmp_path_factory.mktemp("urza-template") / "urza"
    for descriptor, kernel in (MLP_ADAPTER, UNSTABLE):
        run_cli(kasmina_bin, "urza", "publish", str(descriptor), str(kernel), "--urza", str(urza))
    return urza


@pytest.fixture(scope="session")
def key_file(kasmina_bin, tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("key") / "kasmina.key"
    run_cli(kasmina_bin, "keygen", str(path))
    return path


@pytest.fixture(scope="session")
def hmac_key(key_file) -> kasmina.HmacKey:
    return kasmina.HmacKey.from_file(str(key_file))


class Daemon:
    """One ``kasmina serve`` process on a temporary socket."""

    def __init__(
        self,
        kasmina_bin: pathlib.Path,
        workdir: pathlib.Path,
        urza: pathlib.Path,
        key_file: pathlib.Path,
        settings: str,
    ):
        self.bin = kasmina_bin
        self.dir = workdir
        self.urza = urza
        self.key_file = key_file
        self.socket = workdir / "kasmina.sock"
        self.settings = workdir / "settings.toml"
        self.settings.write_text(settings)
        self.log = workdir / "daemon.log"
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 30.0) -> "Daemon":
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [
                str(self.bin),
                "serve",
                "--settings",
                str(self.settings),
                "--socket",
                str(self.socket),
                "--urza",
                str(self.urza),
                "--journal",
                str(self.dir / "journal"),
                "--key-file",
                str(self.key_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"kasmina serve exited with {self.proc.returncode}: {self.log.read_text()}")
            if self.socket.exists():
                try:
                    kasmina.Client.connect(str(self.socket), "observer", "probe", timeout=5.0).close()
                    return self
                except kasmina.TransportError:
                    pass
            time.sleep(0.02)  # polling for the socket to appear, not waiting for an outcome
        raise AssertionError(f"kasmina serve did not come up within {timeout} s: {self.log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: the daemon vanishes mid-run."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def client(self, role: str, name: str = "pytest") -> kasmina.Client:
        return kasmina.Client.connect(str(self.socket), role, name, timeout=30.0)


@pytest.fixture
def make_daemon(kasmina_bin, urza_template, key_file, tmp_path):
    """Starts daemons (each with its own copy of the Urza library); stops them all after the test."""
    started: List[Daemon] = []
    count = [0]

    def make(settings: str = FAST_SETTINGS) -> Daemon:
        count[0] += 1
        workdir = tmp_path / f"daemon-{count[0]}"
        workdir.mkdir()
        urza = workdir / "urza"
        shutil.copytree(urza_template, urza)
        d = Daemon(kasmina_bin, workdir, urza, key_file, settings).start()
        started.append(d)
        return d

    yield make
    for d in started:
        d.stop()


@pytest.fixture
def daemon(make_daemon) -> Daemon:
    return make_daemon()


def germinate(
    controller: kasmina.Client,
    key: kasmina.HmacKey,
    run_id: str,
    seed_id: str,
    blueprint: str,
    site: str,
    annotations: Optional[Dict[str, str]] = None,
) -> kasmina.Outcome:
    """Signs and sends a GERMINATE; returns the outcome."""
    cmd = (
        kasmina.Command.seed(seed_id, kasmina.SeedOperation.GERMINATE, blueprint)
        .issued_by("pytest-controller")
        .annotation("training_run_id", run_id)
        .annotation("mesh_layers", site)
        .annotations(annotations or {})
        .sign(key)
    )
    return controller.submit_command(cmd)


def fossilize(
    controller: kasmina.Client, key: kasmina.HmacKey, run_id: str, seed_id: str, blueprint: str, site: str
) -> kasmina.Outcome:
    cmd = (
        kasmina.Command.seed(seed_id, "FOSSILIZE", blueprint)
        .annotation("training_run_id", run_id)
        .annotation("mesh_layers", site)
        .sign(key)
    )
    return controller.submit_command(cmd)
