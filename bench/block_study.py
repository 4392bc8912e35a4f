"""The command `python -m bench.block_study`; its code is bench/studies/block_study.py."""

from bench.studies.block_study import main

if __name__ == "__main__":
    raise SystemExit(main())
