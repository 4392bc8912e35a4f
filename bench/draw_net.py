"""The command `python -m bench.draw_net`; its code is bench/studies/draw_net.py."""

from bench.studies.draw_net import main

if __name__ == "__main__":
    raise SystemExit(main())
