"""The command `python -m bench.compile_time`; its code is bench/studies/compile_time.py."""

from bench.studies.compile_time import main

if __name__ == "__main__":
    raise SystemExit(main())
