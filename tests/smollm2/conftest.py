"""The real-model tests' fixtures (test_real.py, test_world_build.py): the world's config and the converted
SmolLM2, skipped with the install command when the optional package is missing (`.ci/run` installs it)."""

import importlib.util

import pytest


@pytest.fixture(scope="module")
def cfg():
    from zppo_ray.config import load_config

    return load_config("configs/smollm2.yaml", [])


@pytest.fixture(scope="module")
def student_dir(cfg):
    from zppo_ray.worlds.smollm2 import acquire

    if importlib.util.find_spec(acquire.MODULE) is None or importlib.util.find_spec("gguf") is None:
        pytest.skip(f"optional package missing: {acquire.INSTALL}")
    return acquire.ensure_smollm2(cfg.smollm2.cache_dir)
