"""The command `python -m bench.compare`; its code is bench/reporting/compare.py."""

from bench.reporting.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
