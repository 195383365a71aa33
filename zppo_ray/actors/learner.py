"""The learner group: K DeepSpeed ranks (`PolicyLearner`) as Ray actors on one placement group.

The actor is a thin shell; all learning logic lives in `zppo_ray.learner.policy`. The group turns one call from the
driver into one call per rank, because every heavy method is collective (a rank that is not called blocks
the others): items are split into contiguous, near-equal shards, results are put back in the original order.

Start-up follows the usual rendezvous pattern: the actors start empty, rank 0 reports its node address and
a free port, then all ranks build their learner concurrently (init_distributed blocks until all joined).

A rank that dies cannot be replaced alone: its shard of the optimizer state is gone and the survivors are
stuck in a collective waiting for it. Every call therefore watches all ranks and raises `LearnerLost`
(naming the rank and the call) as soon as one dies, instead of waiting for the others' collective timeout;
the driver then rebuilds the whole group from the last checkpoint (zppo_ray/launch.py).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from zppo_ray.algo.losses import DIVERGENCES
from zppo_ray.errors import LearnerLost
from zppo_ray.learner.policy import check_items, reduce_metrics
from zppo_ray.types import TrainItem


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class _LearnerShell:
    """One rank in its own process. `setup` builds the PolicyLearner; the rest forwards to it."""

    def __init__(self, num_threads: int = 1):
        import torch

        torch.set_num_threads(max(1, num_threads))  # ranks share the host's cores with other actors
        self.learner = None

    def master_address(self) -> tuple[str, int]:
        return ray.util.get_node_ip_address(), _free_port()

    def setup(self, model_path, learner_cfg, algo_cfg, rank, world_size, master_addr, master_port, seed,
              trust_remote_code=False) -> dict:
        from zppo_ray.learner.policy import PolicyLearner

        self.learner = PolicyLearner(model_path, learner_cfg, algo_cfg, rank, world_size, master_addr,
                                     master_port, seed, trust_remote_code)
        return {"max_len": self.learner.max_len, "init_seconds": self.learner.init_seconds, "pid": os.getpid(),
                "multimodal": self.learner.vision is not None}

    def compute_logprobs(self, items):
        return self.learner.compute_logprobs(items)

    def train_minibatch(self, items, loss_fn=None):
        return self.learner.train_minibatch(items, loss_fn)

    def export_weights(self):
        return self.learner.export_weights()

    def weight_sizes(self):
        return self.learner.weight_sizes()

    def stream_weights(self, max_bytes: int):
        """A Ray streaming generator: rank 0 yields one safetensors bucket at a time, stored in the object
        store from this process; the other ranks yield nothing but take part in every ZeRO-3 gather."""
        from safetensors.torch import save

        for bucket in self.learner.weight_buckets(max_bytes, copy=False):  # serialised at once: no copy first
            if bucket is not None:
                yield save(bucket)

    # The GPU path (zppo_ray/weights/vllm_transfer.py): vLLM's trainer-side transfer engine lives here.
    def connect_weight_transfer(self, backend, engines, worlds, bucket_bytes, master_addr, master_port, timeout_s):
        from zppo_ray.weights.vllm_transfer import connect

        self.transfer = connect(self.learner, backend, engines, worlds, bucket_bytes, master_addr, master_port,
                                timeout_s)

    def send_weights(self):
        self.transfer.send_weights()

    def close_weight_transfer(self):
        transfer, self.transfer = getattr(self, "transfer", None), None
        if transfer is not None:
            transfer.shutdown()

    def save(self, path):
        return self.learner.save(path)

    def load(self, path):
        return self.learner.load(path)

    def save_hf(self, path):
        return self.learner.save_hf(path)


LearnerActor = ray.remote(_LearnerShell)


def shard(items: list, n: int) -> list[list]:
    """`n` contiguous shards whose sizes differ by at most one (concatenating them gives `items` back)."""
    q, r = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + q + (1 if i < r else 0)
        out.append(items[start:end])
        start = end
    return out


# How long a failed collective waits for Ray to say whether a peer rank died (Ray declares a lost node dead after
# its health checks fail, seconds to tens of seconds).
PEER_WAIT_S = 60.0


class LearnerGroup:
    """`learner_cfg.num_ranks` data-parallel ranks; one method call = one collective call on every rank."""

    def __init__(self, model_path: str, learner_cfg, algo_cfg, seed: int = 0, ready_timeout_s: float = 600.0,
                 trust_remote_code: bool = False, resources: dict | None = None, strategy: str = "PACK"):
        """`resources` / `strategy`: the config's placement.learner / placement.learner_strategy."""
        self.num_ranks = n = int(learner_cfg.num_ranks)
        cpus, gpus = float(learner_cfg.cpus_per_rank), float(learner_cfg.gpus_per_rank)
        bundle = {"CPU": cpus, **({"GPU": gpus} if gpus else {}), **(resources or {})}
        self._pg = placement_group([dict(bundle) for _ in range(n)], strategy=strategy)
        self.actors: list = []
        try:
            ray.get(self._pg.ready(), timeout=ready_timeout_s)
            self.actors = [
                LearnerActor.options(
                    num_cpus=cpus, num_gpus=gpus,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(self._pg, placement_group_bundle_index=i),
                ).remote(max(1, int(cpus)))
                for i in range(n)
            ]
            addr, port = self._get([self.actors[0].master_address.remote()], "its start")[0]
            infos = self._get([a.setup.remote(model_path, learner_cfg, algo_cfg, i, n, addr, port, seed,
                                              trust_remote_code) for i, a in enumerate(self.actors)],
                              "its start", timeout_s=ready_timeout_s)
        except BaseException:
            # Nothing of a group that did not start is left holding resources. A rank placed on a node that is
            # going away (its loss not yet known to Ray) dies as it starts: that LearnerLost lets the caller
            # try again (launch.recover_learner).
            self.shutdown()
            raise
        self.max_len = infos[0]["max_len"]
        self.multimodal = infos[0]["multimodal"]
        self.init_seconds = max(i["init_seconds"] for i in infos)
        # The policy version the ranks' weights are (0: the checkpoint every engine starts from), or None
        # after an update that was not pushed yet. Set by the weight sync (zppo_ray/weights).
        self.weights_version: int | None = 0

    def _get(self, refs: list, what: str, timeout_s: float | None = None) -> list[Any]:
        """ray.get of one ref per rank that fails fast: LearnerLost as soon as any rank's process died."""
        rank_of = {r: i for i, r in enumerate(refs)}
        pending = list(refs)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, pending = ray.wait(pending, num_returns=1, timeout=left)
            if not ready:
                raise ray.exceptions.GetTimeoutError(f"learner ranks not done with {what} after {timeout_s:.0f} s")
            try:
                ray.get(ready[0])
            except ray.exceptions.RayActorError as e:
                lost = "" if what == "its start" else "; its optimizer state is lost with it"
                raise LearnerLost(f"learner rank {rank_of[ready[0]]} of {self.num_ranks} died during {what} "
                                  f"({type(e).__name__}){lost}") from None
            except ray.exceptions.RayTaskError:
                # When a rank's process dies, the others' collective fails too (gloo: "Connection closed by
                # peer"), and that error can come back before Ray knows of the death (a lost node is noticed
                # after its health checks fail): a dead peer is the cause, the error only its echo. Found by the
                # chaos run, node b lost during a training step.
                self._raise_if_peer_lost(what)
                raise
        return ray.get(refs)

    def _raise_if_peer_lost(self, what: str, wait_s: float = PEER_WAIT_S) -> None:
        """LearnerLost if a rank is dead, or does not answer within `wait_s` (stuck in a collective with a dead
        peer, or on a node Ray has not declared lost yet); returns when every rank answers alive."""
        refs = [a.__ray_ready__.remote() for a in self.actors]
        _, silent = ray.wait(refs, num_returns=len(refs), timeout=wait_s)
        for rank, ref in enumerate(refs):
            if ref in silent:
                raise LearnerLost(f"learner rank {rank} of {self.num_ranks} did not answer for {wait_s:.0f} s after "
                                  f"{what} failed on another rank; its optimizer state is taken as lost")
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                raise LearnerLost(f"learner rank {rank} of {self.num_ranks} died during {what}; its optimizer "
                                  "state is lost with it") from None

    def _all(self, method: str, *args) -> list[Any]:
        return self._get([getattr(a, method).remote(*args) for a in self.actors], method)

    def compute_logprobs(self, items: list[TrainItem]) -> list[list[float]]:
        err = check_items(items, self.max_len, train=False, multimodal=self.multimodal)
        if err:
            raise ValueError(err)
        shards = shard(items, self.num_ranks)
        results = self._get([a.compute_logprobs.remote(s) for a, s in zip(self.actors, shards)], "compute_logprobs")
        return [lp for part in results for lp in part]

    def train_minibatch(self, items: list[TrainItem], loss_fn=None) -> dict[str, float]:
        """One optimizer step over `items` (all ranks step together on their shards)."""
        if not items:
            raise ValueError("empty mini-batch")
        err = check_items(items, self.max_len, train=True, distill=isinstance(loss_fn, str) and loss_fn in DIVERGENCES,
                          multimodal=self.multimodal)
        if err:
            raise ValueError(err)
        shards = shard(items, self.num_ranks)
        self.weights_version = None  # the weights move away from every pushed version until the next push
        return reduce_metrics(self._get([a.train_minibatch.remote(s, loss_fn) for a, s in zip(self.actors, shards)],
                                        "train_minibatch"))

    def export_weights(self) -> dict:
        """The full HF state dict (rank 0's; the other ranks only take part in the gather). Checkpoints and
        tests only: a weight push streams (`stream_weights`) and never brings the weights here."""
        return self._all("export_weights")[0]

    def weight_sizes(self) -> list[tuple[str, int]]:
        """(name, bytes) of everything a push sends, in model order (no gather: shapes only)."""
        return self._get([self.actors[0].weight_sizes.remote()], "weight_sizes")[0]

    def stream_weights(self, max_bytes: int, poll_s: float = 5.0) -> Iterator[Any]:
        """Object references to rank 0's safetensors buckets, one at a time (collective on all ranks). The
        caller must be done with each reference before asking for the next: rank 0 waits (generator
        backpressure) while two buckets are unclaimed, so the object store never holds the whole model."""
        gens = [a.stream_weights.options(_generator_backpressure_num_objects=2).remote(max_bytes)
                for a in self.actors]
        for rank, gen in enumerate(gens):
            while True:
                # fetch_local=False: the driver waits for a bucket, it never pulls one to its node
                ready, _ = ray.wait([gen], timeout=poll_s, fetch_local=False)
                if not ready:  # a dead rank leaves the others blocked in a gather: look, then wait again
                    self.raise_if_lost("a weight push")
                    continue
                try:
                    ref = next(gen)
                except StopIteration:
                    break
                if rank:
                    ray.get(ref)  # ranks > 0 yield nothing: a reference from them carries their error
                else:
                    yield ref

    def raise_if_lost(self, what: str, timeout_s: float = 2.0) -> None:
        """LearnerLost if any rank's process is gone (a rank busy in a collective just does not answer)."""
        refs = [a.__ray_ready__.remote() for a in self.actors]
        ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        for rank, ref in enumerate(refs):
            try:
                ray.get(ref, timeout=0)
            except ray.exceptions.RayActorError:
                raise LearnerLost(f"learner rank {rank} of {self.num_ranks} died during {what}; its optimizer "
                                  "state is lost with it") from None
            except ray.exceptions.GetTimeoutError:
                pass

    def connect_weight_transfer(self, backend: str, engines: list, worlds: list[int], bucket_bytes: int,
                                timeout_s: float) -> None:
        """GPU path: every rank builds vLLM's trainer-side transfer engine; rank 0 rendezvouses with
        `engines` (collective)."""
        addr, port = ray.get(self.actors[0].master_address.remote())
        self._all("connect_weight_transfer", backend, engines, worlds, bucket_bytes, addr, port, timeout_s)

    def send_weights(self) -> None:
        """GPU path: one full transfer into every connected engine (collective; rank 0 drives the engines)."""
        self._all("send_weights")

    def close_weight_transfer(self) -> None:
        self._all("close_weight_transfer")

    def save(self, path: str) -> None:
        self._all("save", str(path))

    def load(self, path: str) -> None:
        self._all("load", str(path))
        self.weights_version = None  # a checkpoint's weights: the caller pushes them with their version

    def save_hf(self, path: str) -> None:
        self._all("save_hf", str(path))

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
        if self._pg is not None:
            remove_placement_group(self._pg)
            self._pg = None
