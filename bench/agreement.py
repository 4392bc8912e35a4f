"""The command `python -m bench.agreement`; its code is bench/studies/agreement_study.py."""

from bench.studies.agreement_study import main

if __name__ == "__main__":
    raise SystemExit(main())
