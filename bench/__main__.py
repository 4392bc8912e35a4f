"""`python -m bench COMMAND ...`: the same as the console script `lenet-bench COMMAND ...`."""

from bench.cli import main

raise SystemExit(main())
