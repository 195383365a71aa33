"""`python -m zppo_ray.config [config.yaml] [key=value ...] [--available-gpus N]`: print the resolved config."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from zppo_ray.config import ConfigError, load_config, split_cli_args, to_yaml


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m zppo_ray.config", description="Print the resolved config.")
    parser.add_argument("items", nargs="*", help="[config.yaml] key.path=value ...")
    parser.add_argument("--available-gpus", type=int, default=None, help="also check the GPU layout fits")
    args = parser.parse_args(argv)
    path, items = split_cli_args(args.items)
    try:
        cfg = load_config(path, items, available_gpus=args.available_gpus)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from zppo_ray.redact import redact_text

    print(redact_text(to_yaml(cfg)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
