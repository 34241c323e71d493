"""`onebit-run` for an installed wheel: executes the C CLI that `pip install .` ships beside
libonebit.so (onebit/_lib/), or, in a source checkout, runtime_c/build/onebit-run (built on first use).

The C binary is the whole program; this only finds it, so `onebit-run --help` is the C one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from onebit.errors import OnebitError, cli_errors

PACKAGE_DIR = Path(__file__).resolve().parent.parent
REPO_RUNTIME = PACKAGE_DIR.parent / "runtime_c"
BINARY = "onebit-run"


def locate_cli() -> Path:
    """The onebit-run binary: the shipped one, else the checkout's (made with `make -C runtime_c`)."""
    shipped = PACKAGE_DIR / "_lib" / BINARY
    if shipped.is_file() and not (REPO_RUNTIME / "Makefile").is_file():
        return shipped
    if (REPO_RUNTIME / "Makefile").is_file():
        built = REPO_RUNTIME / "build" / BINARY
        done = subprocess.run(["make", "-C", str(REPO_RUNTIME), "all"], capture_output=True, text=True)
        if done.returncode != 0 or not built.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise OnebitError(f"building the C runtime with make -C {REPO_RUNTIME} failed: {tail[0]}")
        return built
    raise OnebitError("the onebit-run binary is not installed: reinstall onebit (pip install .)")


@cli_errors
def main() -> None:
    binary = locate_cli()
    os.execv(binary, [str(binary), *sys.argv[1:]])


if __name__ == "__main__":
    main()
