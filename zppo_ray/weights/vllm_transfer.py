"""The GPU weight path: vLLM's native weight transfer (NCCL between GPUs, CUDA IPC when colocated).

Where each piece runs:
* driver (`VllmTransferSync`): decides when to connect (first push, or the set of engines changed: a
  replacement, a death), asks every learner rank to send, and lets the pool commit the version. It never
  sees a tensor.
* learner ranks (`connect`, in the learner actors): vLLM's trainer-side engine
  (`WeightTransferTrainerFactory.trainer_init`) over a `LearnerSource` (the DeepSpeed model, gathered one
  bucket at a time under ZeRO-3, so every rank takes part and rank 0 sends) and an `EngineFanout` client;
  rank 0 opens the NCCL group / exports the IPC handles and drives the engines' four-call protocol
  (`init_weight_transfer_engine` once, then per push `start_weight_update`, `update_weights`,
  `finish_weight_update`), the broadcast running concurrently with the engines' receive.
* engines (`RolloutWorker.weight_transfer` → `VLLMEngine.weight_transfer` → `collective_rpc`): vLLM's
  worker-side engine, built from `WeightTransferConfig(backend=...)`, receives and reloads layer-wise.

Not run on a GPU here (these machines have none): the control plane (call order, rank offsets, versions,
reconnects, failures, fan-out to every engine) is tested on CPU with fake engines and a fake learner
(tests/test_weight_sync.py); the NCCL/IPC data path itself is vLLM's and has not run in this project.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import ray

from zppo_ray.weights import PoolSync

log = logging.getLogger(__name__)


class EngineFanout:
    """vLLM's `VLLMWeightSyncClient` over the rollout actors: every call reaches every engine (and, through
    the engine's collective_rpc, each of its tensor-parallel workers), and fails naming the engine. With
    NCCL all engines join ONE transfer group: engine k's workers get ranks after the learner's sender and
    the workers of engines 0..k-1 (vLLM's own Ray client gives every engine the same offset)."""

    def __init__(self, engines: list, worlds: list[int], timeout_s: float):
        if len(engines) != len(worlds) or not engines:
            raise ValueError(f"{len(engines)} engine(s) with {len(worlds)} world size(s)")
        self.engines, self.worlds, self.timeout_s = list(engines), list(worlds), timeout_s

    @property
    def world_size(self) -> int:
        """The NCCL group: the learner's sender plus every worker of every engine."""
        return 1 + sum(self.worlds)

    def _each(self, method: str, payloads: list) -> None:
        refs = [e.weight_transfer.remote(method, p) for e, p in zip(self.engines, payloads)]
        _, late = ray.wait(refs, num_returns=len(refs), timeout=self.timeout_s)
        if late:
            raise TimeoutError(f"weight transfer {method}: engine(s) {[refs.index(r) for r in late]} did not "
                               f"answer within {self.timeout_s:g}s")
        for k, ref in enumerate(refs):
            try:
                ray.get(ref)
            except Exception as e:
                raise RuntimeError(f"weight transfer {method} failed on engine {k}: {e}") from e

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        payloads = []
        for k in range(len(self.engines)):
            info = dict(init_info)
            if "rank_offset" in info:  # NCCL: this engine's first worker rank in the one group
                info["rank_offset"] = int(init_info["rank_offset"]) + sum(self.worlds[:k])
            payloads.append(info)
        self._each("init_weight_transfer_engine", payloads)

    def start_weight_update(self) -> None:
        self._each("start_weight_update", [None] * len(self.engines))

    def update_weights(self, update_info: Any) -> None:
        self._each("update_weights", [update_info] * len(self.engines))

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        self._each("finish_weight_update", [None] * len(self.engines))  # the pool commits our own version


def learner_source(learner: Any, bucket_bytes: int, every_rank: bool = False):
    """vLLM's `WeightSource` over a PolicyLearner: metadata from shapes (no gather); iteration gathers one
    bucket at a time on every rank; rank 0 yields the tensors on its device (NCCL: it alone broadcasts),
    or every rank does (`every_rank`, IPC: each rank exports the copy on its own GPU)."""
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    class LearnerSource(WeightSource):
        def metadata(self) -> list[ParamMeta]:
            named = learner.engine.module.state_dict(keep_vars=True)
            return [ParamMeta(n, t.dtype, tuple(getattr(t, "ds_shape", t.shape))) for n, t in named.items()]

        def __iter__(self) -> Iterator[tuple[str, Any]]:
            for bucket in learner.weight_buckets(bucket_bytes, device=learner.device, every_rank=every_rank):
                if bucket is not None:
                    yield from bucket.items()

    return LearnerSource()


def connect(learner: Any, backend: str, engines: list, worlds: list[int], bucket_bytes: int, master_addr: str,
            master_port: int, timeout_s: float):
    """Runs on every learner rank: vLLM's trainer-side engine, ready to `send_weights()`."""
    from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

    client = EngineFanout(engines, worlds, timeout_s)
    if backend == "nccl":
        from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

        info = NCCLTrainerInitInfo(master_address=master_addr, master_port=master_port, world_size=client.world_size,
                                   packed_buffer_size_bytes=bucket_bytes, rank=learner.rank)
    elif backend == "ipc":
        from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

        info = IPCTrainerInitInfo(packed=True, packed_buffer_size_bytes=bucket_bytes, rank=learner.rank)
    else:
        raise ValueError(f"unknown weight transfer backend {backend!r} (nccl or ipc)")
    source = learner_source(learner, bucket_bytes, every_rank=backend == "ipc")
    return WeightTransferTrainerFactory.trainer_init(info, client=client, source=source)


class VllmTransferSync(PoolSync):
    """The driver's side of the GPU path (module doc); a `zppo_ray.weights.WeightSync`."""

    def __init__(self, backend: str, bucket_bytes: int, timeout_s: float):
        if backend not in ("nccl", "ipc"):
            raise ValueError(f"unknown weight transfer backend {backend!r} (nccl or ipc)")
        self.name = self.backend = backend
        self.bucket_bytes, self.timeout_s = bucket_bytes, timeout_s
        self._connected: tuple = ()  # (slot, generation) of every engine in the current transfer group
        self._engines: list = []

    def _transfer(self, calls: Any) -> None:
        key = calls.identity()
        if key != self._connected:  # first push, or engines changed: the group's membership is fixed at init
            self._disconnect()
            self.learner.connect_weight_transfer(self.backend, calls.handles, [self.rollout.tp] * len(calls.slots),
                                                 self.bucket_bytes, self.timeout_s)
            self._connected, self._engines = key, calls.handles
            log.info("weight transfer (%s) connected to %d engine(s)", self.backend, len(calls.slots))
        try:
            self.learner.send_weights()
        except Exception:
            self._disconnect()  # a failed broadcast leaves the group unusable: the next push reconnects
            raise

    def _disconnect(self) -> None:
        if not self._connected:
            return
        self._connected = ()
        try:
            self.learner.close_weight_transfer()
        except Exception:  # noqa: BLE001 - a dead learner is reported by the call that found it
            log.warning("closing the learner's weight transfer failed", exc_info=True)
        refs = [e.weight_transfer.remote("shutdown_weight_transfer_engine") for e in self._engines]
        ray.wait(refs, num_returns=len(refs), timeout=min(self.timeout_s, 60.0))
        self._engines = []

    def shutdown(self) -> None:
        if self.learner is not None:
            self._disconnect()
        super().shutdown()
