"""Builds the C runtime (runtime_c/, via make) into the package: onebit/_lib/libonebit.so and the
onebit-run CLI (run through the `onebit-run` console script, onebit/run/native.py).

Everything else about the package is in pyproject.toml. `pip install .` runs this build step; an
editable install (`pip install -e .`) instead builds runtime_c/build/libonebit.so on first use
(onebit/run/c.py runs `make -C runtime_c lib`).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

ROOT = Path(__file__).resolve().parent


class BuildPyWithRuntime(build_py):
    """build_py, then `make all` in a scratch directory; ships the library, its header and the CLI."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "onebit" / "_lib"
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as scratch:
            subprocess.run(["make", "-C", str(ROOT / "runtime_c"), "all", f"BUILD={scratch}"], check=True)
            shutil.copy2(Path(scratch) / "libonebit.so", target / "libonebit.so")
            shutil.copy2(Path(scratch) / "onebit-run", target / "onebit-run")
        shutil.copy2(ROOT / "runtime_c" / "include" / "onebit.h", target / "onebit.h")


class BinaryDistribution(Distribution):
    """The wheel carries a native library, so it is platform-specific."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildPyWithRuntime}, distclass=BinaryDistribution)
