"""Alias kept for scripts: `python -m onebit.run_c` is `onebit run` (onebit/run/c.py)."""

from onebit.cli import run_script

if __name__ == "__main__":
    run_script()
