"""Alias kept for scripts: `python -m onebit.run_c` is `onebit run` (onebit/run/c.py)."""

from onebit.run.c import main

if __name__ == "__main__":
    main()
