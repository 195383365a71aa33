"""Shared fixtures: the toy world is built once per machine (cached) and reused by every test."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # helper modules next to the tests (push_helpers)

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")


@pytest.fixture(scope="session")
def toy_cfg():
    from zppo_ray.config import load_config

    return load_config(None, [])


@pytest.fixture(scope="session")
def toy_world(toy_cfg):
    """Tokenizer + pretrained student and teacher (built on first use, minutes; then cached)."""
    from zppo_ray.worlds.toy.bootstrap import ensure_toy_world

    return ensure_toy_world(toy_cfg.toy, toy_cfg.templates)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every test that needs one (starting Ray costs seconds each time)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False, namespace="zppo-test")
    yield ray
    ray.shutdown()
