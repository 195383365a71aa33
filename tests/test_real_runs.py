"""The guard of the session's shared roles (tests/real_runs.py): a run cannot change what they started with, and
a test that timed out on them stops the runs after it at once."""

import pytest
from real_runs import SharedRoles, short_cfg


def test_a_run_that_sets_a_key_the_roles_read_differently_is_refused(tmp_path):
    shared = SharedRoles(roles=None, initial="unused", cfg=short_cfg(tmp_path))
    with pytest.raises(ValueError, match=r"cannot change what they started with: \['learner'\]"):
        shared.fresh(short_cfg(tmp_path, "learner.lr=1e-7"), tmp_path)
    with pytest.raises(ValueError, match=r"\['algo.eps_high'\]"):
        shared.fresh(short_cfg(tmp_path, "algo.eps_high=0.3"), tmp_path)


def test_roles_left_mid_call_by_a_timed_out_test_stop_the_next_run(tmp_path):
    shared = SharedRoles(roles=None, initial="unused", cfg=short_cfg(tmp_path))
    shared.broken = "tests/test_e2e.py::test_x"
    with pytest.raises(RuntimeError, match=r"left mid-call by tests/test_e2e.py::test_x, which timed out"):
        shared.fresh(short_cfg(tmp_path), tmp_path)
