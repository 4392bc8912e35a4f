"""The command `python -m bench.profile`; its code is bench/studies/profile.py."""

from bench.studies.profile import main

if __name__ == "__main__":
    raise SystemExit(main())
