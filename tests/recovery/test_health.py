"""The replica health state machine (zppo_ray/actors/health.py): every transition, the budget, illegal orders."""

import pytest

from zppo_ray.actors.health import Fleet, IllegalTransition, ReplicaHealth, State


def test_the_full_cycle_of_a_rollout_worker():
    r = ReplicaHealth("rollout-0", max_restarts=2)
    assert r.serving
    assert r.failure(fatal=False) is State.SUSPECT and not r.serving
    assert r.success() is State.HEALTHY  # a slow answer clears the suspicion
    r.failure(fatal=False)
    assert r.failure(fatal=False) is State.DEAD  # a second failure while suspect
    assert r.restart() is State.RESTARTING and r.restarts == 1
    assert r.up() is State.STALE and not r.serving  # up, but with the weights it started from
    assert r.weights() is State.HEALTHY and r.serving
    assert [e for e, _ in r.history] == ["failure", "success", "failure", "failure", "restart", "up", "weights"]


def test_a_fatal_failure_skips_suspect_and_a_frozen_teacher_needs_no_weights():
    t = ReplicaHealth("teacher-0", max_restarts=1, needs_weights=False)
    assert t.failure(fatal=True) is State.DEAD
    t.restart()
    assert t.up() is State.HEALTHY


def test_the_restart_budget_and_late_answers():
    r = ReplicaHealth("w", max_restarts=1)
    r.failure(fatal=True)
    r.restart()
    assert r.success() is State.RESTARTING  # a late answer of the old process changes nothing
    assert r.failure(fatal=True) is State.DEAD  # the replacement failed to start
    assert r.gave_up and r.failure(fatal=True) is State.DEAD
    with pytest.raises(IllegalTransition, match="budget"):
        r.restart()


@pytest.mark.parametrize("start,call", [("healthy", "restart"), ("healthy", "up"), ("dead", "weights"),
                                        ("restarting", "weights"), ("dead", "up")])
def test_illegal_transitions_raise(start, call):
    r = ReplicaHealth("w", max_restarts=3, state=State(start))
    with pytest.raises(IllegalTransition):
        getattr(r, call)()


def test_fleet_answers_what_the_pools_ask():
    f = Fleet(["a", "b", "c"], max_restarts=1, needs_weights=True)
    f[1].failure(fatal=True)
    f[2].failure(fatal=False)
    assert f.serving() == [0] and f.to_restart() == [1] and f.in_state(State.SUSPECT) == [2]
    assert f.counts() == {"healthy": 1, "suspect": 1, "dead": 1, "restarting": 0, "stale": 0}
    f[1].restart()
    f[1].failure(fatal=True)  # its one restart failed
    f[0].failure(fatal=True)
    f[0].restart()
    f[0].failure(fatal=True)
    f[2].failure(fatal=True)
    f[2].restart()
    f[2].failure(fatal=True)
    assert f.to_restart() == [] and not f.recoverable()
