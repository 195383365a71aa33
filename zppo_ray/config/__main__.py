"""`python -m zppo_ray.config [config.yaml] [key=value ...] [--available-gpus N]`: print the resolved config."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from zppo_ray.cli import run_entry
from zppo_ray.config import load_config, split_cli_args, to_yaml


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m zppo_ray.config", description="Print the resolved config.")
    parser.add_argument("items", nargs="*", help="[config.yaml] key.path=value ...")
    parser.add_argument("--available-gpus", type=int, default=None, help="also check the GPU layout fits")
    args = parser.parse_args(argv)
    path, items = split_cli_args(args.items)
    cfg = load_config(path, items, available_gpus=args.available_gpus)  # a ConfigError: one line, exit 2 (cli.py)
    from zppo_ray.redact import redact_text

    print(redact_text(to_yaml(cfg)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(run_entry(main))
