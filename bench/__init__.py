"""lenet-bench: the benchmarks of the tutorial's Net (README.md, "Layout")."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the checkout this code runs from
