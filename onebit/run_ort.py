"""Alias kept for scripts: `python -m onebit.run_ort` is `onebit run-ort` (onebit/run/ort.py)."""

from onebit.run.ort import main

if __name__ == "__main__":
    main()
