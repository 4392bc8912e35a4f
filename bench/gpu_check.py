"""The command `python -m bench.gpu_check`; its code is bench/studies/gpu_check.py."""

from bench.studies.gpu_check import main

if __name__ == "__main__":
    raise SystemExit(main())
