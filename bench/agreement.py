"""The command `python -m bench.agreement`; its code is bench/measure/agreement.py."""

from bench.measure.agreement import main

if __name__ == "__main__":
    raise SystemExit(main())
