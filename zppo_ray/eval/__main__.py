"""`python -m zppo_ray.eval`: the evaluation harness CLI (zppo_ray/eval/cli.py)."""

import sys

from zppo_ray.cli import run_entry
from zppo_ray.eval.cli import main

if __name__ == "__main__":
    sys.exit(run_entry(main))
