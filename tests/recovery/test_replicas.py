"""Pools that survive their actors: the rollout pool, the teacher group and the buffer client, on a real
local Ray cluster with fake engine actors (the pools are the unit under test, not the engines)."""

import os
import time

import pytest
import ray
from ray_helpers import kill as _kill

from zppo_ray.actors.buffer import BufferClient, ReplayBufferActor
from zppo_ray.actors.health import State
from zppo_ray.actors.rollout import RolloutPool
from zppo_ray.actors.teacher import TeacherGroup, TeacherTimeout
from zppo_ray.data.schema import Question
from zppo_ray.errors import InfraError, boundary
from zppo_ray.seeds import request_seeds
from zppo_ray.state.buffer import BufferConfig
from zppo_ray.types import GenRequest, Sample


@ray.remote(num_cpus=0)
class FakeEngine:
    """Answers "echo" samples; prompts steer it: SLOW sleeps, BAD is an input it rejects."""

    def __init__(self, name):
        self.name, self.v, self.calls = name, 0, 0

    def version(self):
        return self.v

    def pid(self):
        return os.getpid()

    def health(self):
        return {"name": self.name, "version": self.v}

    def shutdown(self):
        pass

    def begin_weights(self, names):
        self.loading = []
        return len(names)

    def load_bucket(self, blob):
        self.loading.append(blob)
        return 1

    def commit_weights(self, version):
        self.v = version
        return version

    @boundary("fake")
    def generate(self, requests, sampling):
        self.calls += 1
        if any(r.prompt == "BAD" for r in requests):
            raise ValueError("prompt of 9000 tokens > max_model_len")
        if any(r.prompt.startswith("SLOW") and r.prompt.partition("@")[2] in ("", self.name) for r in requests):
            time.sleep(3.0)  # "SLOW..." is slow everywhere, "SLOW@w0-0" only on the actor named w0-0
        seeds = sampling.get("seed") or [0] * len(requests)
        return [[Sample([1], [2], [0.0], f"{r.prompt}|{self.name}|{seed}", "stop", self.v)] * r.n
                for r, seed in zip(requests, seeds)]

    def counts(self):
        return self.calls


def _factory(made):
    def start(i):
        h = FakeEngine.remote(f"w{i}-{len(made)}")
        made.append(h)
        return h, None
    return start


def _reqs(prompts):
    return [GenRequest(p, n=2, tag=p) for p in prompts]


def _wait_serving(replicas, n, timeout=30.0):
    deadline = time.monotonic() + timeout
    while len(replicas.fleet.serving()) < n:
        assert time.monotonic() < deadline, replicas.fleet.counts()
        replicas.maintain(block_s=0.5)


def test_a_killed_rollout_worker_loses_no_request_and_serves_again_only_with_current_weights(ray_cluster):
    made = []
    start = _factory(made)
    pool = RolloutPool([start(0)[0], start(1)[0]], factory=start, max_restarts=2)
    try:
        prompts = [f"SLOW{i}" for i in range(4)]
        pending = pool.generate_async(_reqs(prompts), {"seed": 100})
        second = pool.generate_async(_reqs(["SLOW-x", "SLOW-y"]), {"seed": 7})  # also has a part on slot 0
        victim = pool.replicas.handles[0]
        time.sleep(0.5)
        ray.kill(victim, no_restart=True)
        out = pool.collect(pending)
        # Every request answered, in order, by the surviving worker with the same per-request seed.
        assert [g[0].text.split("|")[0] for g in out] == prompts
        assert [g[0].text.split("|")[2] for g in out] == [str(x) for x in request_seeds(100, 4)]
        assert pending.gather.retried == 2 and pool.replicas.fleet[0].restarts == 1
        # The second call's failure on the same dead actor is old news: its items move, the slot's
        # replacement is not written off (one restart, not two).
        assert [g[0].text.split("|")[0] for g in pool.collect(second)] == ["SLOW-x", "SLOW-y"]
        assert second.gather.retried == 1 and pool.replicas.fleet[0].restarts == 1
        # The replacement is up but stale; a push reaches the serving worker, the replacement gets it too
        # (with the push if it is up by then, or right after from the weight source).
        def transfer(calls):
            calls.each("begin_weights", ["w"])
            calls.each("load_bucket", b"weights-v1")

        pool.weight_source = lambda i: pool.reload_slot(i, transfer)
        pool.update_weights(1, transfer)
        _wait_serving(pool.replicas, 2)
        assert ray.get([h.version.remote() for h in pool.replicas.handles]) == [1, 1]
        assert [e for e, _ in pool.replicas.fleet[0].history][-3:] == ["restart", "up", "weights"]
        out = pool.generate(_reqs(["a", "b", "c", "d"]), {"seed": 0})
        assert {s.version for g in out for s in g} == {1}
        assert len({g[0].text.split("|")[1] for g in out}) == 2  # both slots serve again
        health = pool.health()
        assert [h["state"] for h in health] == ["healthy", "healthy"] and health[0]["restarts"] == 1
    finally:
        pool.shutdown(grace_s=1.0)


def test_a_bad_request_is_retried_alone_then_skipped_and_the_rest_go_on(ray_cluster):
    made = []
    start = _factory(made)
    pool = RolloutPool([start(0)[0]], factory=start, max_restarts=1)
    try:
        pending = pool.generate_async(_reqs(["ok1", "BAD", "ok2"]), {"seed": 0})
        out = pool.collect(pending)
        assert [len(g) for g in out] == [2, 0, 2] and list(pending.skipped) == [1]
        assert "max_model_len" in pending.skipped[1]
        assert pool.replicas.fleet[0].state is State.HEALTHY  # the worker was fine, the input was not
    finally:
        pool.shutdown(grace_s=1.0)


def test_no_worker_left_is_a_clear_error(ray_cluster):
    pool = RolloutPool([FakeEngine.remote("only")], factory=None, max_restarts=0)
    try:
        _kill(pool.replicas.handles[0])
        with pytest.raises(InfraError, match="every rollout replica is dead"):
            pool.generate(_reqs(["a"]), {"seed": 0})
    finally:
        pool.shutdown(grace_s=1.0)


def test_teacher_timeout_moves_the_work_and_the_slow_replica_is_probed(ray_cluster):
    made = []
    start = _factory(made)
    group = TeacherGroup([start(0)[0], start(1)[0]], request_timeout_s=1.0, factory=start, max_restarts=1)
    ray.get([h.version.remote() for h in made])  # up before the 1 s deadlines start (as TeacherGroup.create does)
    try:
        # Slow only on w0-0 (3 s > the 1 s deadline): its item moves to w1-1, the call succeeds.
        out = group.generate(_reqs(["SLOW@w0-0", "b"]), {"seed": 0})
        assert [g[0].text.split("|")[:2] for g in out] == [["SLOW@w0-0", "w1-1"], ["b", "w1-1"]]
        assert group.replicas.fleet[0].state is State.SUSPECT
        _wait_serving(group.replicas, 2)  # the slow call finishes; the health probe finds w0-0 answering again
        assert group.replicas.fleet[0].restarts == 0
        # Slow everywhere: no replica can take the late items, so the caller gets a clear timeout.
        with pytest.raises(TeacherTimeout, match="'generate' timed out"):
            group.generate(_reqs(["SLOW-a", "SLOW-b"]), {"seed": 0})
        assert group.replicas.fleet.serving() == []
    finally:
        group.shutdown(grace_s=1.0)


def test_a_killed_buffer_actor_is_rebuilt_from_its_live_snapshot(ray_cluster, tmp_path):
    live = str(tmp_path / "live")
    client = BufferClient(lambda: ReplayBufferActor.remote(BufferConfig(capacity=10), 0, live), live, lambda: None)
    qs = {f"q{i}": Question(id=f"q{i}", prompt=f"p{i}", answer="1") for i in range(4)}
    try:
        client.refresh(1, {"q0": 0.0, "q1": 0.0}, qs, [])
        _kill(client.handle)
        assert client.size() == 2  # rebuilt on the failed call, from the step-1 snapshot, call repeated
        assert client.restarts == 1 and client.lost_refreshes == 0
        out = client.refresh(2, {"q0": 1.0, "q2": 0.0}, qs, ["q0"])
        assert out["graduated"] == 1 and sorted(client.ids()) == ["q1", "q2"]
        # Without a readable snapshot the client falls back (here: nothing) and counts what was lost.
        _kill(client.handle)
        for f in os.listdir(live):
            os.remove(os.path.join(live, f))
        assert client.size() == 0 and client.lost_refreshes == 2
    finally:
        ray.kill(client.handle)
