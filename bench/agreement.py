"""The command `python -m bench.agreement`; its code is bench/studies/agreement.py."""

from bench.studies.agreement import main

if __name__ == "__main__":
    raise SystemExit(main())
