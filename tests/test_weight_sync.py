"""The weight sync (zppo_ray/weights): bucket planning, and the push protocol of both transports on a real
local Ray cluster with fake engine actors and fake learners (the sync and the pool are the units under test).
The real learner and engines stream buckets in tests/test_learner.py, test_engine.py and the slow end-to-end
test at the bottom of this file."""

import time
from contextlib import contextmanager

import pytest
import ray
from ray_helpers import kill as _kill

from zppo_ray.actors.health import State
from zppo_ray.actors.rollout import RolloutPool, WeightPushError
from zppo_ray.errors import boundary
from zppo_ray.types import GenRequest, Sample
from zppo_ray.weights.buckets import layer_groups, layer_key, plan_buckets

# ------------------------------------------------------------------------------------------- buckets

NAMES = ["model.embed_tokens.weight", "model.layers.0.q.weight", "model.layers.0.mlp.weight",
         "model.layers.1.q.weight", "model.layers.1.mlp.weight", "model.norm.weight", "lm_head.weight"]


def test_layer_keys_take_the_outermost_index():
    assert layer_key("model.layers.3.mlp.experts.7.w1") == ("model.layers", 3)
    assert layer_key("visual.blocks.0.attn.qkv.weight") == ("visual.blocks", 0)
    assert layer_key("lm_head.weight") is None
    assert layer_groups(NAMES) == [NAMES[:1], NAMES[1:3], NAMES[3:]]  # the head travels with the last layer


def test_buckets_merge_whole_layers_up_to_the_budget():
    sizes = list(zip(NAMES, [40, 10, 20, 10, 20, 1, 40]))
    assert plan_buckets(sizes, 1000) == [NAMES]
    assert plan_buckets(sizes, 70) == [NAMES[:3], NAMES[3:]]  # 70 = embeddings + layer 0
    # a layer never splits; one bigger than the budget is a bucket of its own
    assert plan_buckets(sizes, 25) == [NAMES[:1], NAMES[1:3], NAMES[3:]]
    assert [n for b in plan_buckets(sizes, 1) for n in b] == NAMES
    with pytest.raises(ValueError, match="positive"):
        plan_buckets(sizes, 0)
    with pytest.raises(ValueError, match="duplicate"):
        plan_buckets(sizes + sizes[:1], 100)


# ------------------------------------------------------------------------- fakes around the real pool


@ray.remote(num_cpus=0)
class FakeEngine:
    """Records the push calls it gets; `fail` makes one verb raise once (an engine error, not a death)."""

    def __init__(self, name, fail=None):
        self.name, self.v, self.log, self.fail = name, 0, [], fail

    def version(self):
        return self.v

    def health(self):
        return {"name": self.name, "version": self.v}

    def shutdown(self):
        pass

    def calls(self):
        return self.log

    def _note(self, verb, arg=None):
        self.log.append((verb, arg))
        if self.fail == verb:
            self.fail = None
            raise RuntimeError(f"{verb} broke on {self.name}")

    @boundary("fake")
    def begin_weights(self, names):
        self._note("begin", len(names))
        return len(names)

    @boundary("fake")
    def load_bucket(self, blob):
        assert isinstance(blob, bytes)  # the object-store reference was resolved in this process
        self._note("bucket", blob.decode())
        return 1

    @boundary("fake")
    def weight_transfer(self, method, payload=None):
        self._note(method, payload)

    def commit_weights(self, version):
        self.log.append(("commit", version))
        self.v = version
        return version

    def generate(self, requests, sampling):
        return [[Sample([1], [2], [0.0], self.name, "stop", self.v)] * r.n for r in requests]


def _pool(n, fail=None, tp=1):
    made = []

    def start(i):
        h = FakeEngine.remote(f"w{i}-{len(made)}", fail if len(made) < n else None)
        made.append(h)
        return h, None

    return RolloutPool([start(i)[0] for i in range(n)], factory=start, max_restarts=2, tp=tp), made


def _wait_healthy(pool, n, timeout=30.0):
    deadline = time.monotonic() + timeout
    while len(pool.replicas.fleet.serving()) < n:
        assert time.monotonic() < deadline, pool.replicas.fleet.counts()
        pool.replicas.maintain(block_s=0.5)


class FakeLearner:
    """LearnerGroup's weight side: three buckets per push, put into the object store (by rank 0 in a run);
    `between(k)` runs after bucket k was handed out (to kill a worker mid-push)."""

    SIZES = [("model.embed_tokens.weight", 4), ("model.layers.0.w", 4), ("lm_head.weight", 4)]

    def __init__(self):
        self.weights_version, self.streams, self.between = 0, 0, lambda k: None

    def weight_sizes(self):
        return self.SIZES

    def stream_weights(self, max_bytes):
        self.streams += 1
        for k in range(3):
            yield ray.put(f"b{k}".encode())
            self.between(k)

    def raise_if_lost(self, what):
        pass

    def train(self):
        self.weights_version = None


def _object_store():
    from zppo_ray.weights.object_store import ObjectStoreSync

    return ObjectStoreSync(bucket_bytes=8)


def _nccl():
    from zppo_ray.weights.vllm_transfer import VllmTransferSync

    return VllmTransferSync("nccl", bucket_bytes=8, timeout_s=30)


@contextmanager
def _synced(learner, make_sync, n, **pool_kw):
    """A pool of `n` fake engines with `make_sync()` attached to it and `learner`; both shut down after."""
    pool, made = _pool(n, **pool_kw)
    sync = make_sync()
    sync.init(learner, pool)
    try:
        yield pool, made, learner, sync
    finally:
        sync.shutdown()
        pool.shutdown(grace_s=1.0)


PUSH_CALLS = [("begin", 3), ("bucket", "b0"), ("bucket", "b1"), ("bucket", "b2")]


def test_object_store_push_begins_streams_every_bucket_then_commits_on_every_worker(ray_cluster):
    with _synced(FakeLearner(), _object_store, 2) as (pool, made, learner, sync):
        learner.train()
        report = sync.push(1)
        assert report.bytes == 12 and report.buckets == 3 and pool.version == 1 and learner.weights_version == 1
        for h in made:
            assert ray.get(h.calls.remote()) == [*PUSH_CALLS, ("commit", 1)]
        with pytest.raises(ValueError, match="must exceed"):
            sync.push(1)
        assert {s.version for g in pool.generate([GenRequest("p", n=2)], {}) for s in g} == {1}
        sync.push(1, rollback=True)  # resuming from a checkpoint may repeat or lower the version


def test_a_push_waits_for_another_threads_generate_call_and_never_splits_it(ray_cluster):
    """Asynchronous rollouts: the producer thread has a generate call in flight when the controller pushes.
    The push waits for it (its samples stay on the old version), then runs; a call of the pushing thread
    itself would never be collected while it waits, so that is refused at once."""
    import threading

    with _synced(FakeLearner(), _object_store, 2) as (pool, made, learner, sync):
        learner.train()
        dispatched, release, out = threading.Event(), threading.Event(), {}

        def producer():  # sends two chunks, then collects them, as the trainer's plain rollouts do
            pending = pool.generate_async([GenRequest("p", n=2)], {})
            dispatched.set()
            release.wait(10)
            second = pool.generate_async([GenRequest("q", n=1)], {})  # not held back: it has a call in flight
            out["samples"] = pool.collect(pending) + pool.collect(second)

        t = threading.Thread(target=producer)
        t.start()
        assert dispatched.wait(10)
        pushing = threading.Thread(target=lambda: out.setdefault("report", sync.push(1)))
        pushing.start()
        pushing.join(0.5)
        assert pushing.is_alive() and pool.version == 0  # waiting for the producer's call
        release.set()
        t.join(10)
        pushing.join(30)
        assert not pushing.is_alive() and pool.version == 1 and out["report"].buckets == 3
        assert len(out["samples"]) == 2 and {s.version for g in out["samples"] for s in g} == {0}
        assert {s.version for g in pool.generate([GenRequest("p", n=2)], {}) for s in g} == {1}
        mine = pool.generate_async([GenRequest("p", n=1)], {})
        with pytest.raises(WeightPushError, match="this thread"):
            sync.push(2)
        pool.collect(mine)


def test_a_worker_killed_mid_push_is_replaced_and_loads_the_weights_before_it_serves(ray_cluster):
    with _synced(FakeLearner(), _object_store, 2) as (pool, made, learner, sync):
        learner.between = lambda k: _kill(made[1]) if k == 1 else None
        learner.train()
        sync.push(1)  # worker 1 died after two of three buckets: written off, worker 0 commits alone
        assert ray.get(made[0].calls.remote())[-1] == ("commit", 1) and pool.version == 1
        assert pool.replicas.fleet[1].state is State.DEAD  # written off; replaced at the pool's next upkeep
        learner.between = lambda k: None
        _wait_healthy(pool, 2)  # the replacement streams the learner's weights (still version 1), then serves
        assert ray.get(made[2].calls.remote()) == [*PUSH_CALLS, ("commit", 1)]
        out = pool.generate([GenRequest(f"p{i}", n=1) for i in range(4)], {})
        assert {s.version for g in out for s in g} == {1} and {g[0].text for g in out} == {"w0-0", "w1-2"}


def test_a_push_whose_every_worker_died_starts_over_on_their_replacements(ray_cluster):
    with _synced(FakeLearner(), _object_store, 2) as (pool, made, learner, sync):
        learner.between = lambda k: [_kill(h) for h in made[:2]] if k == 0 and learner.streams == 1 else None
        learner.train()
        sync.push(1)  # a lost node: both die after the first bucket; the push waits for two replacements
        assert learner.streams == 2 and pool.version == 1 and pool.versions() == [1, 1]
        for h in made[2:]:
            assert ray.get(h.calls.remote()) == [*PUSH_CALLS, ("commit", 1)]


def test_a_replacement_waits_for_the_next_push_once_the_learner_moved_on(ray_cluster):
    with _synced(FakeLearner(), _object_store, 2) as (pool, made, learner, sync):
        learner.train()
        sync.push(1)
        learner.train()  # the learner holds unpushed weights: they are not version 1
        _kill(made[1])
        pool.generate([GenRequest(f"p{i}", n=1) for i in range(4)], {})  # notices the death; worker 0 answers
        deadline = time.monotonic() + 30
        while pool.replicas.fleet[1].state is not State.STALE:
            assert time.monotonic() < deadline, pool.replicas.fleet.counts()
            pool.replicas.maintain(block_s=0.5)
        assert learner.streams == 1 and ray.get(made[2].calls.remote()) == []  # stale, not served from
        sync.push(2)  # the push includes the stale slot
        assert ray.get(made[2].calls.remote()) == [*PUSH_CALLS, ("commit", 2)]
        assert pool.replicas.fleet[1].state is State.HEALTHY


def test_a_failed_bucket_leaves_the_pool_refusing_to_serve_until_a_push_succeeds(ray_cluster):
    with _synced(FakeLearner(), _object_store, 2, fail="bucket") as (pool, made, learner, sync):
        with pytest.raises(WeightPushError, match="load_bucket failed on rollout-"):
            sync.push(1)
        assert pool.version == 0 and learner.weights_version == 0
        assert all(("commit", 1) not in ray.get(h.calls.remote()) for h in made)  # nobody committed
        with pytest.raises(WeightPushError, match="not serving"):
            pool.generate([GenRequest("p", n=1)], {})
        sync.push(1)  # the same push again, now without an error
        assert pool.version == 1 and {s.version for g in pool.generate([GenRequest("p", n=2)], {}) for s in g} == {1}


# ------------------------------------------------------------------- the GPU path's control plane


class TransferLearner(FakeLearner):
    """LearnerGroup's GPU side with vLLM's real trainer-side NCCL engine, minus the CUDA broadcast: what
    `zppo_ray.weights.vllm_transfer.connect` builds on rank 0, driving our EngineFanout client."""

    def __init__(self):
        super().__init__()
        self.engine, self.events = None, []

    def connect_weight_transfer(self, backend, engines, worlds, bucket_bytes, timeout_s):
        from vllm.distributed.weight_transfer.nccl_common import NCCLWeightTransferInitInfo, worker_init_payload
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerWeightTransferEngine

        from zppo_ray.weights.vllm_transfer import EngineFanout

        class NoCuda(NCCLTrainerWeightTransferEngine):
            def _broadcast(self, source, meta):
                list(source)

            def _post_send_sync(self):
                pass

        client = EngineFanout(engines, worlds, timeout_s)
        # what NCCLTrainerWeightTransferEngine.trainer_init sends before opening its endpoint
        client.init_weight_transfer_engine(worker_init_payload(NCCLWeightTransferInitInfo(
            master_address="10.0.0.1", master_port=29500, rank_offset=1, world_size=client.world_size)))
        self.engine = NoCuda(client=client, source=_Source(), is_sender=True)
        self.events.append(("connect", len(engines)))

    def send_weights(self):
        self.engine.send_weights()

    def close_weight_transfer(self):
        self.events.append(("close",))
        self.engine = None


def _Source():
    import torch
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    class Source(WeightSource):
        def metadata(self):
            return [ParamMeta("lm_head.weight", torch.float32, (2, 2))]

        def __iter__(self):
            yield "lm_head.weight", torch.zeros(2, 2)

    return Source()


def _methods(h):
    return [m for m, _ in ray.get(h.calls.remote())]


ONE_PUSH = ["start_weight_update", "update_weights", "finish_weight_update", "commit"]


def test_gpu_transfer_connects_once_with_a_rank_range_per_engine_then_pushes_in_vllms_order(ray_cluster):
    with _synced(TransferLearner(), _nccl, 2, tp=2) as (pool, made, learner, sync):
        sync.push(1)
        sync.push(2)
        init = [p for h in made for m, p in ray.get(h.calls.remote()) if m == "init_weight_transfer_engine"]
        assert [p["rank_offset"] for p in init] == [1, 3] and {p["world_size"] for p in init} == {5}
        for h in made:
            assert _methods(h) == ["init_weight_transfer_engine", *ONE_PUSH, *ONE_PUSH]
            assert [p for m, p in ray.get(h.calls.remote()) if m == "commit"] == [1, 2]
        names = [p["names"] for m, p in ray.get(made[0].calls.remote()) if m == "update_weights"]
        assert names == [["lm_head.weight"]] * 2 and pool.version == 2 and learner.events == [("connect", 2)]


def test_gpu_transfer_failure_breaks_the_pool_and_membership_changes_reconnect(ray_cluster):
    with _synced(TransferLearner(), _nccl, 2, fail="update_weights") as (pool, made, learner, sync):
        with pytest.raises(RuntimeError, match="update_weights failed on engine 0"):
            sync.push(1)
        assert pool.version == 0 and learner.events == [("connect", 2), ("close",)]
        assert "commit" not in _methods(made[1]) and _methods(made[1])[-1] == "shutdown_weight_transfer_engine"
        with pytest.raises(WeightPushError, match="not serving"):
            pool.generate([GenRequest("p", n=1)], {})
        sync.push(1)  # a failed group is never reused: connect again
        assert pool.version == 1 and learner.events[-1] == ("connect", 2)
        _kill(made[0])
        pool.generate([GenRequest(f"p{i}", n=1) for i in range(4)], {})
        _wait_healthy(pool, 2)  # the replacement changed the membership: a group of it alone, version 1
        assert learner.events[-2:] == [("close",), ("connect", 1)]
        assert _methods(made[2]) == ["init_weight_transfer_engine", *ONE_PUSH]
        sync.push(2)
        assert learner.events[-2:] == [("close",), ("connect", 2)] and pool.versions() == [2, 2]


# --------------------------------------------------------------- the real thing: learner → two engines


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """An untrained tiny model (seconds to build): the push is about bytes and versions, not about skill."""
    from zppo_ray.worlds.toy.models import Arch, build_model
    from zppo_ray.worlds.toy.tokenizer import build_tokenizer

    path = tmp_path_factory.mktemp("tiny")
    corpus = [f"What is {a} + {b}? {a + b}" for a in range(30) for b in range(30)] + ["user assistant system"] * 30
    tok = build_tokenizer(corpus, vocab_size=300)
    build_model(Arch(64, 2, 2, 1, 128), tok, 512, seed=0).save_pretrained(path)
    tok.save_pretrained(path)
    return path, tok


@pytest.fixture(scope="module")
def real_learner(tiny, ray_cluster):
    """One DeepSpeed learner group for every real-push test of this module."""
    from zppo_ray.actors.learner import LearnerGroup
    from zppo_ray.config import AlgoConfig, LearnerConfig

    learner = LearnerGroup(str(tiny[0]), LearnerConfig(lr=3e-3, weight_decay=0.0), AlgoConfig())
    yield learner
    learner.shutdown()


@pytest.mark.slow
def test_a_real_bucketed_push_with_a_worker_killed_mid_push_serves_only_the_new_weights(tiny, real_learner):
    """A DeepSpeed learner group and two vLLM workers. First the pool alone: seeded sampling, a push refused
    while a call is in flight, unknown sampling keys refused. Then one training step and a push in three
    buckets during which worker 1 is killed. Worker 0 commits; worker 1's replacement streams the learner's
    weights before it serves; every sample then equals transformers' greedy decoding of the learner's weights."""
    import torch
    from transformers import AutoModelForCausalLM

    from zppo_ray.config import ModelConfig, RolloutConfig
    from zppo_ray.types import TrainItem
    from zppo_ray.weights.object_store import ObjectStoreSync

    path, tok = tiny
    learner = real_learner
    pool = RolloutPool.create(RolloutConfig(num_workers=2, max_restarts=1), ModelConfig(path=str(path), max_model_len=256))
    sync = ObjectStoreSync(bucket_bytes=100_000)  # embeddings, layer 0, layer 1 with the head: three buckets
    sync.init(learner, pool)
    try:
        reqs = [GenRequest(f"What is {i} + 1?", n=i + 1, tag=f"q{i}") for i in range(3)]
        seeded = {"temperature": 1.0, "max_tokens": 12, "seed": 5}
        out = pool.generate(reqs, seeded)
        assert [len(g) for g in out] == [1, 2, 3] and {s.version for g in out for s in g} == {0}
        assert [[s.completion_ids for s in g] for g in pool.generate(reqs, seeded)] == \
            [[s.completion_ids for s in g] for g in out]
        with pytest.raises(ValueError, match="unknown sampling keys"):
            pool.generate(reqs, {"temprature": 1.0})
        pending = pool.generate_async(reqs[:1], {"temperature": 0.0, "max_tokens": 8})
        with pytest.raises(WeightPushError, match="in flight"):  # a call never mixes two versions
            sync.push(1)
        pool.collect(pending)
        assert pool.versions() == [0, 0]

        probes = [GenRequest(f"What is {i} + {2 * i}?", n=1) for i in range(8)]
        before = [g[0].completion_ids for g in pool.generate(probes, {"temperature": 0.0, "max_tokens": 12})]
        prompts = [GenRequest(f"What is {i} + {i + 3}?", n=4) for i in range(4)]
        groups = pool.generate(prompts, {"temperature": 1.0, "max_tokens": 12, "seed": 3})
        learner.train_minibatch([TrainItem(prompt_ids=s.prompt_ids, completion_ids=s.completion_ids,
                                           advantage=(-1.0) ** j, old_logprobs=s.logprobs)
                                 for g in groups for j, s in enumerate(g)])
        stream, streamed = learner.stream_weights, []

        def killing_stream(max_bytes):  # worker 1 dies once the first bucket landed everywhere
            for k, ref in enumerate(stream(max_bytes)):
                streamed.append(k)
                yield ref
                if k == 0:
                    _kill(pool.workers[1])

        learner.stream_weights = killing_stream
        try:
            report = sync.push(1)
        finally:
            learner.stream_weights = stream
        assert streamed == [0, 1, 2] and report.buckets == 3 and pool.version == 1
        assert pool.replicas.fleet[1].state is State.DEAD
        _wait_healthy(pool, 2, timeout=300)
        assert pool.versions() == [1, 1]

        hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        hf.load_state_dict(learner.export_weights())
        greedy = pool.generate(probes, {"temperature": 0.0, "max_tokens": 12})
        assert [g[0].completion_ids for g in greedy] != before  # the step changed what the engines say
        with torch.no_grad():
            for g in greedy:
                s = g[0]
                ids = torch.tensor([s.prompt_ids])
                out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                                  eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
                assert s.version == 1 and s.completion_ids == out[0, ids.shape[1]:].tolist()
        health = pool.health()
        assert {h["name"] for h in health} == {"rollout-0", "rollout-1"}
        assert all(h["alive"] and h["version"] == 1 for h in health) and health[0]["generated_tokens"] > 0
    finally:
        sync.shutdown()
        pool.shutdown()


@pytest.mark.slow
def test_an_abandoned_stream_does_not_hold_up_the_next_one(real_learner):
    """A push that fails half-way drops the learner's stream after one bucket; the learner's actor must still
    serve the next push in full (Ray releases an out-of-scope generator's backpressure, so the old one ends).
    Were it held up, the next stream would wait forever: it runs in a thread, so the test fails instead."""
    import threading

    first = real_learner.stream_weights(60_000)
    next(first)
    first.close()  # what an exception in the consumer's loop does to it
    del first
    got: dict = {}

    def consume():
        try:
            got["blobs"] = [ray.get(ref) for ref in real_learner.stream_weights(60_000)]
        except BaseException as e:  # noqa: BLE001 - reported below
            got["error"] = e

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    reader.join(120)  # a bound on a hang, not a speed target: the stream itself takes about a second
    assert not reader.is_alive(), "the next stream is still waiting: the abandoned one holds the learner"
    assert "error" not in got, got.get("error")
    assert len(got["blobs"]) >= 3


def test_with_async_rollouts_a_replacement_waits_for_the_next_push_instead_of_streaming():
    """The learner may be training when a replacement comes up: checking its version and streaming would
    race with the update (new weights under the old version), so the slot waits for the next push."""
    from types import SimpleNamespace

    from zppo_ray.weights import make_weight_sync

    cfg = SimpleNamespace(weight_sync="object_store", weight_bucket_mb=1.0, request_timeout_s=30.0)
    streamed = []
    sync = make_weight_sync(cfg, reload_replacements=False)
    sync.learner = SimpleNamespace(weights_version=3)
    sync.rollout = SimpleNamespace(version=3, reload_slot=lambda slot, transfer: streamed.append(slot) or True)
    assert sync._reload(0) is None and streamed == []
    sync = make_weight_sync(cfg)
    sync.learner, sync.rollout = SimpleNamespace(weights_version=3), SimpleNamespace(
        version=3, reload_slot=lambda slot, transfer: streamed.append(slot) or True)
    assert sync._reload(1) is True and streamed == [1]
