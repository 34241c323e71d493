"""The wheel works on its own: `pip install .` gives the library, the cffi binding and the C CLI."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "runtime_c" / "tests" / "data" / "tiny.1bit"


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory) -> Path:
    """The wheel built from this checkout, unzipped where no runtime_c/ sits beside it."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(REPO)], check=True, capture_output=True)
    (wheel,) = out.glob("onebit-*.whl")
    site = out / "site"
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():  # extractall drops the mode bits that pip install restores
            z.extract(info, site)
            mode = info.external_attr >> 16
            if mode:
                (site / info.filename).chmod(mode & 0o777)
    return site


def _run(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("ONEBIT_LIB", None)
    return subprocess.run([sys.executable, *args], capture_output=True, env=env, cwd=site)


def test_wheel_ships_library_header_and_cli(unpacked_wheel):
    lib = unpacked_wheel / "onebit" / "_lib"
    assert {"libonebit.so", "onebit.h", "onebit-run"} <= {p.name for p in lib.iterdir()}
    assert os.access(lib / "onebit-run", os.X_OK)


def test_wheel_cli_and_binding_agree(unpacked_wheel):
    args = ["-m", str(FIXTURE), "-p", "a", "-n", "40", "--temperature", "0"]
    native = _run(unpacked_wheel, "-m", "onebit.run.native", *args)
    binding = _run(unpacked_wheel, "-m", "onebit.cli", "run", *args)
    assert native.returncode == 0, native.stderr.decode()
    assert binding.returncode == 0, binding.stderr.decode()
    assert native.stdout == binding.stdout and len(native.stdout) > 2
    # both came from the wheel, not from this checkout
    where = _run(unpacked_wheel, "-c", "import onebit.run.c as c; print(c._locate()[0])")
    assert where.stdout.decode().strip().startswith(str(unpacked_wheel)), where.stdout
