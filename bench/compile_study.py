"""The command `python -m bench.compile_study`; its code is bench/studies/compile_study.py."""

from bench.studies.compile_study import main

if __name__ == "__main__":
    raise SystemExit(main())
