"""The built wheel: one abi3 binary wheel (CPython >= 3.9) with the native
module, the Python package and its type stubs; `pip install` of it into a
fresh venv needs no compiler and no network, and the package imports
without PyTorch (only `kasmina.torch` needs it)."""

import os
import pathlib
import subprocess
import sys
import zipfile

import pytest


@pytest.fixture(scope="module")
def wheel() -> pathlib.Path:
    value = os.environ.get("KASMINA_WHEEL")
    if not value or not pathlib.Path(value).is_file():
        raise pytest.UsageError("KASMINA_WHEEL must point at the wheel scripts/setup.sh built; run scripts/test.sh")
    return pathlib.Path(value)


def test_the_wheel_is_one_abi3_binary_wheel_with_stubs(wheel):
    name = wheel.name
    assert name.startswith("kasmina-") and "-cp39-abi3-" in name and name.endswith(".whl"), name
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "kasmina/__init__.py",
        "kasmina/_errors.py",
        "kasmina/_native.pyi",
        "kasmina/py.typed",
        "kasmina/torch/__init__.py",
        "kasmina/torch/_grafter.py",
    ):
        assert required in names, required
    natives = [n for n in names if n.startswith("kasmina/_native") and n.endswith(".so")]
    assert natives == ["kasmina/_native.abi3.so"], natives


def test_pip_installs_it_with_no_compiler(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # No compiler, no cargo, no network: a binary wheel needs none of them.
    env = {
        "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "CC": "/bin/false",
        "CXX": "/bin/false",
        "RUSTC": "/bin/false",
        "CARGO": "/bin/false",
        "PIP_NO_INDEX": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    done = subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Building wheel" not in done.stdout
    check = subprocess.run(
        [
            str(python),
            "-c",
            "import kasmina, sys; "
            "assert 'torch' not in sys.modules; "
            "k = kasmina.HmacKey.from_bytes(bytes(32)); "
            "c = kasmina.Command.pause('s').sign(k); "
            "assert c.verify(k); "
            "print(kasmina.CONTRACT_VERSION, kasmina.PROTOCOL_VERSION)",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stderr
    import kasmina

    assert check.stdout.split() == [str(kasmina.CONTRACT_VERSION), str(kasmina.PROTOCOL_VERSION)]
