"""The command `python -m bench.calibration`; its code is bench/reporting/calibration.py."""

from bench.reporting.calibration import main

if __name__ == "__main__":
    raise SystemExit(main())
