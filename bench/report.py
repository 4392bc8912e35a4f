"""The command `python -m bench.report`; its code is bench/reporting/report.py."""

from bench.reporting.report import main

if __name__ == "__main__":
    raise SystemExit(main())
