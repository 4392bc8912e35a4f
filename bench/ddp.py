"""The command `python -m bench.ddp`; its code is bench/studies/ddp.py."""

from bench.studies.ddp import main

if __name__ == "__main__":
    raise SystemExit(main())
