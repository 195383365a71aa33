"""The one typed schema of a run: defaults ← YAML file ← dotted CLI overrides, checked before anything starts.

Why one module: every actor, the trainer and the tests read the same dataclasses, so a key exists in exactly
one place with one default and one docstring. Defaults describe the CPU toy world (tiny models bootstrapped
locally, no GPU); the paper recipe is `configs/paper_8x8_h100.yaml`.

Why our own merge walker instead of a bare `OmegaConf.merge`: OmegaConf loses the key path inside lists of
structured items ("full_key: bogus" instead of "data.train[0].bogus") and warns on implicit conversions.
The walker follows the dataclass types, lets OmegaConf validate each leaf, and turns every failure into a
`ConfigError` naming the full key path and what is allowed there.

    python -m zppo_ray.config [config.yaml] [key=value ...] [--available-gpus N]   # prints the resolved YAML

Layout: `schema.py` (the dataclasses), `load.py` (files and overrides), `checks.py` (validation),
`__main__.py` (the CLI). Import from `zppo_ray.config`.
"""

from zppo_ray.config.checks import (  # noqa: F401 - tests check the range tables
    _AT_LEAST_0,
    _AT_LEAST_1,
    _POSITIVE,
    _PROB,
    _UNIT,
    _get,
    gpus_required,
    validate,
)
from zppo_ray.config.load import load_config, save_resolved, split_cli_args, to_yaml
from zppo_ray.config.schema import *  # noqa: F403 - the sections are this package's API
from zppo_ray.config.schema import CPU_HEAD_DIMS, ConfigError, RunConfig

__all__ = ["CPU_HEAD_DIMS", "ConfigError", "RunConfig", "gpus_required", "load_config", "save_resolved",
           "split_cli_args", "to_yaml", "validate"]
