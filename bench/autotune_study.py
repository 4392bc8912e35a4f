"""The command `python -m bench.autotune_study`; its code is bench/studies/autotune_study.py."""

from bench.studies.autotune_study import main

if __name__ == "__main__":
    raise SystemExit(main())
