"""Alias kept for scripts: `python -m onebit.run_ort` is `onebit run-ort` (onebit/run/ort.py)."""

from onebit.cli import run_ort_script

if __name__ == "__main__":
    run_ort_script()
