"""A learner rank lost: the group is rebuilt and the run rolls back (zppo_ray/launch.py recover_learner). A new
group can lose a rank as it starts (Ray placed it on a node whose loss it has not noticed yet, found by the chaos
run): that start is a learner loss too, retried within trainer.learner_restarts, never an unhandled crash."""

import os
from types import SimpleNamespace

import pytest
import ray

from zppo_ray import launch
from zppo_ray.errors import LearnerLost
from zppo_ray.roles import Roles


class FakeGroup:
    def __init__(self, name):
        self.name, self.stopped = name, False

    def shutdown(self):
        self.stopped = True


class FakeWeights:
    def __init__(self):
        self.inits = []

    def init(self, learner, rollout):
        self.inits.append(learner.name)

    def shutdown(self):
        pass


@pytest.fixture
def rebuild(tmp_path, monkeypatch):
    """recover_learner with its checkpoint, placement record and resume replaced (other units, tested elsewhere)."""
    checkpoint = tmp_path / "checkpoints" / "step-000002"
    monkeypatch.setattr(launch.ckpt, "latest", lambda run_dir: checkpoint)
    monkeypatch.setattr(launch.placement, "record", lambda *a: None)
    resumed = []
    monkeypatch.setattr(launch, "resume", lambda trainer, roles, d: resumed.append((roles.learner.name, d)))
    roles = Roles(rollout=object(), learner=FakeGroup("broken"), weights=FakeWeights())
    trainer = SimpleNamespace(roles=SimpleNamespace(learner=roles.learner))

    def run(starts, attempt=1, budget=2):
        outcomes = iter(starts)

        def new_learner():
            outcome = next(outcomes)
            if isinstance(outcome, Exception):
                raise outcome
            return FakeGroup(outcome)

        return launch.recover_learner(trainer, roles, tmp_path, LearnerLost("learner rank 1 of 2 died"), attempt,
                                      budget, new_learner)

    return SimpleNamespace(run=run, roles=roles, trainer=trainer, resumed=resumed, checkpoint=checkpoint)


def test_a_group_that_loses_a_rank_as_it_starts_is_built_again_and_counted(rebuild):
    spent = rebuild.run([LearnerLost("learner rank 1 of 2 died during its start"), "second"])
    assert spent == 2  # the failed start cost a restart of the budget
    assert rebuild.roles.learner.name == "second" and rebuild.trainer.roles.learner is rebuild.roles.learner
    assert rebuild.roles.weights.inits == ["second"] and rebuild.resumed == [("second", rebuild.checkpoint)]


def test_with_the_budget_spent_the_run_stops_naming_why(rebuild):
    with pytest.raises(LearnerLost, match=r"trainer.learner_restarts=2 spent.*trainer.resume=auto"):
        rebuild.run([LearnerLost("learner rank 0 of 2 died during its start")] * 2, attempt=2, budget=2)
    assert rebuild.resumed == []


@ray.remote(num_cpus=0)
class DiesInSetup:
    """A learner rank whose process dies while it sets up (what a rank on a vanishing node does)."""

    def __init__(self, num_threads=1):
        pass

    def master_address(self):
        return "127.0.0.1", 1

    def setup(self, *args):
        os._exit(1)


def test_a_rank_that_dies_while_the_group_starts_is_a_learner_loss(ray_cluster, monkeypatch):
    from zppo_ray.actors import learner as learner_mod
    from zppo_ray.config import AlgoConfig, LearnerConfig

    monkeypatch.setattr(learner_mod, "LearnerActor", DiesInSetup)
    removed = []
    real_remove = learner_mod.remove_placement_group
    monkeypatch.setattr(learner_mod, "remove_placement_group", lambda pg: removed.append(pg) or real_remove(pg))
    with pytest.raises(LearnerLost, match=r"learner rank \d of 2 died during its start"):
        learner_mod.LearnerGroup("unused", LearnerConfig(num_ranks=2, cpus_per_rank=0.01), AlgoConfig())
    assert len(removed) == 1  # the half-started group freed its placement group


@ray.remote(num_cpus=0)
class Rank:
    """A rank in a collective: `dies` exits its process; the other fails as gloo does when its peer is gone."""

    def __init__(self, dies: bool, error: str):
        self.dies, self.error = dies, error

    def step(self):
        import time

        if self.dies:
            time.sleep(0.5)  # the survivor's error comes back first, as it did in the chaos run
            os._exit(1)
        raise RuntimeError(self.error)


def _group(actors):
    from zppo_ray.actors.learner import LearnerGroup

    group = object.__new__(LearnerGroup)  # the ranks are the fakes above; _get is the unit under test
    group.actors, group.num_ranks = actors, len(actors)
    return group


@pytest.fixture
def ranks(ray_cluster):
    made = []
    yield lambda *specs: made.extend(Rank.remote(*spec) for spec in specs) or _group(made)
    for actor in made:
        ray.kill(actor)


def test_a_collective_failing_because_a_peer_died_is_that_peers_loss(ranks):
    group = ranks((False, "Connection closed by peer [127.0.0.1]:12206"), (True, ""))
    with pytest.raises(LearnerLost, match=r"learner rank 1 of 2 died during train_minibatch"):
        group._get([a.step.remote() for a in group.actors], "train_minibatch")


def test_an_error_on_ranks_that_are_all_alive_stays_an_error(ranks):
    group = ranks((False, "a bug"), (False, "a bug"))
    with pytest.raises(ray.exceptions.RayTaskError, match="a bug"):
        group._get([a.step.remote() for a in group.actors], "train_minibatch")
