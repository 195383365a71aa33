"""`python -m zppo_ray.eval`: the evaluation harness CLI (zppo_ray/eval/cli.py)."""

import logging
import sys

from zppo_ray.eval.cli import main

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(main())
