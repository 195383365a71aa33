"""Learner → rollout weight push: the vLLM worker extension and the trainer-side GPU sender.

Lifecycle (one rollout engine, one policy version at a time)
-----------------------------------------------------------
1. **Start.** The engine is built with `worker_extension_cls = "zppo_ray.weight_sync.WeightSyncExtension"`;
   vLLM mixes the class into its worker class, so every method below runs *inside each worker process*
   (one per tensor-parallel rank) with `self` being the vLLM worker. The engine serves version 0 (the
   checkpoint it was started from).
2. **Push (CPU path, the one tested here).** The learner serialises its FULL `state_dict()` with HF names
   to safetensors bytes. The engine sends the bytes to every worker through `collective_rpc` (tensors
   cannot be pickled there: "cannot pickle memoryview"; bytes travel fine) or, for blobs above
   `SHM_THRESHOLD_BYTES`, writes them once to a /dev/shm file and sends the path. Each worker calls its own
   `reload_weights(weights_iterator=..., is_checkpoint_format=True)`, which re-runs the checkpoint loader
   layer by layer, including the CPU backend's repacking of linear weights (a plain `model.load_weights`
   after start skips that and leaves stale packed weights). Each TP rank shards the full tensors itself.
3. **Commit.** After every worker returned, the engine resets the prefix cache (cached KV blocks were
   computed by the old weights) and only then bumps its version. A failed push leaves the version
   unchanged, so a sample is never labelled with weights it was not produced by.
4. **Push (GPU path).** vLLM's native weight-transfer API (vLLM >= 0.29): the engine is built with
   `weight_transfer_config=WeightTransferConfig(backend="nccl" | "ipc")`; the learner's rank 0 runs
   `WeightTransferTrainerFactory.trainer_init(...)` once and `send_weights()` every step; the rollout side
   is driven through the four-call control plane `init_weight_transfer_engine` / `start_weight_update` /
   `update_weights` / `finish_weight_update`, fanned out to all rollout engines by `RolloutFleetClient`.
   NCCL (separate GPUs) broadcasts packed buckets (`packed_buffer_size_bytes`); IPC (rollout colocated on
   the learner's GPUs) hands CUDA IPC handles over. **The GPU path is written against the vLLM 0.32 source
   but is UNTESTED here (no GPU on the development machines)**; it is only reachable when CUDA is present.

Invariants the callers keep (RolloutPool): no generate call is in flight while a push runs; all engines of
a pool confirm the new version before the push returns; a restarted engine must receive the current
weights before it serves.

Tied-embedding trap: a tied model's `save_pretrained()` folder has no `lm_head.weight`, and vLLM then keeps
a stale lm_head with only a warning. `state_dict_to_safetensors_bytes` therefore always serialises the full
`state_dict()` (which names the tied tensor under both keys), cloned so safetensors accepts shared storage.
"""

from __future__ import annotations

import glob
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any


EXTENSION_QUALNAME = "zppo_ray.weight_sync.WeightSyncExtension"
SHM_THRESHOLD_BYTES = 512 * 2**20  # bigger blobs go through one /dev/shm file instead of the RPC channel
DEFAULT_BUCKET_BYTES = 1 << 30  # GPU NCCL packed bucket size (vLLM's packed_buffer_size_bytes)


# ------------------------------------------------------------------------------------------ serialisation


def state_dict_to_safetensors_bytes(state_dict: Mapping[str, Any]) -> bytes:
    """Full state dict (HF names) → safetensors bytes, contiguous CPU copies (tied tensors duplicated)."""
    import torch
    from safetensors.torch import save

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()
               if isinstance(v, torch.Tensor)}
    return save(tensors)


def _iter_safetensors_file(path: str) -> Iterator[tuple[str, Any]]:
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as f:
        for name in f.keys():
            yield name, f.get_tensor(name)


# ------------------------------------------------------------------------------- worker extension (CPU)


class WeightSyncExtension:
    """Mixed into vLLM's worker class; runs in every worker process. Names are prefixed `zppo_` because
    vLLM refuses an extension whose attributes collide with the worker's own."""

    def zppo_load_safetensors_bytes(self, blob: bytes) -> int:
        """Reload all weights from safetensors bytes; returns the number of tensors received."""
        from safetensors.torch import load

        tensors = load(bytes(blob))
        self.zppo_check_names(list(tensors))
        self.reload_weights(  # type: ignore[attr-defined]
            weights_iterator=iter(tensors.items()), is_checkpoint_format=True)
        return len(tensors)

    def zppo_check_names(self, names: list[str]) -> None:
        """Refuse the tied-embedding trap: vLLM's layerwise reload only refreshes a tied lm_head when
        `lm_head.weight` itself arrives ("ParallelLMHead: Failed to load weights" is only a warning, and
        the engine keeps sampling from the old head)."""
        cfg = self.model_config.hf_config  # type: ignore[attr-defined]
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        tied = getattr(text_cfg, "tie_word_embeddings", getattr(cfg, "tie_word_embeddings", False))
        if tied and not any(n.endswith("lm_head.weight") for n in names):
            raise ValueError("weight push has no 'lm_head.weight' but the model ties embeddings: send the FULL "
                             "state_dict() (it names the tied tensor twice); a save_pretrained() folder is not enough")

    def zppo_load_safetensors_file(self, path: str) -> int:
        """Reload from one .safetensors file (e.g. under /dev/shm) or a directory of them, streamed tensor
        by tensor. Our own reader rather than `reload_weights(weights_path=...)`: that one repoints the
        engine's model_config at the directory and skips the tied-embedding check below."""
        from safetensors import safe_open

        files = sorted(glob.glob(os.path.join(path, "*.safetensors"))) if os.path.isdir(path) else [path]
        if not files:
            raise FileNotFoundError(f"no .safetensors file at {path}")
        names: list[str] = []
        for f in files:
            with safe_open(f, framework="pt", device="cpu") as handle:
                names.extend(handle.keys())
        self.zppo_check_names(names)

        def stream() -> Iterator[tuple[str, Any]]:
            for f in files:
                yield from _iter_safetensors_file(f)

        self.reload_weights(weights_iterator=stream(), is_checkpoint_format=True)  # type: ignore[attr-defined]
        return len(names)

    def zppo_param_checksum(self) -> float:
        """Sum of |params| of this rank's model: a cheap "did the weights change" probe for tests/health."""
        import torch

        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        with torch.no_grad():
            return float(sum(p.detach().float().abs().sum().item() for p in model.parameters()))


# ------------------------------------------------------------------------------- GPU path (trainer side)


class RolloutFleetClient:
    """vLLM's `VLLMWeightSyncClient` protocol over a list of rollout-worker Ray actors.

    UNTESTED here (needs CUDA). The trainer-side engine calls these four methods; each fans out to every
    rollout worker (`wt_init`, `wt_start`, `wt_update`, `wt_finish` on `RolloutWorker`) and blocks until all
    answered. NCCL: the trainer is rank 0 and engine `i` owns ranks `1 + i*tp .. (i+1)*tp`, so the
    `rank_offset` the trainer engine writes (always 1) is rewritten per engine. `update_weights` blocks
    inside NCCL until the trainer's broadcast arrives; vLLM's trainer engine calls it from a side thread.
    """

    def __init__(self, workers: Sequence[Any], tp: int, timeout_s: float | None = 600.0):
        self.workers = list(workers)
        self.tp = tp
        self.timeout_s = timeout_s
        self.version: int | None = None  # set by `push_native` before each send; committed in finish

    def _all(self, refs: list) -> list:
        import ray

        return ray.get(refs, timeout=self.timeout_s)

    def init_weight_transfer_engine(self, init_info: dict[str, Any]) -> None:
        infos = []
        for i, _ in enumerate(self.workers):
            info = dict(init_info)
            if "rank_offset" in info:  # NCCL: shift each engine's ranks after the previous engines'
                info["rank_offset"] = int(init_info["rank_offset"]) + i * self.tp
            infos.append(info)
        self._all([w.wt_init.remote(info) for w, info in zip(self.workers, infos)])

    def start_weight_update(self) -> None:
        self._all([w.wt_start.remote() for w in self.workers])

    def update_weights(self, update_info: Any) -> None:
        self._all([w.wt_update.remote(update_info) for w in self.workers])

    def finish_weight_update(self, weight_version: str | None = None) -> None:
        version = self.version if weight_version is None else int(weight_version)
        got = self._all([w.wt_finish.remote(version) for w in self.workers])
        if any(v != version for v in got):
            raise RuntimeError(f"rollout engines report versions {got} after committing {version}")


def full_state_dict_source(model: Any) -> Any:
    """A vLLM `WeightSource` over `model.state_dict()` rather than `named_parameters()`.

    Why not vLLM's `ModuleSource`: `named_parameters()` lists a tied tensor once (as embed_tokens), so
    `lm_head.weight` never reaches the engine and the tied-embedding trap (module doc) reappears on GPU.
    """
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource, materialize_full_tensor

    class _FullStateDict(WeightSource):
        def __init__(self, module: Any) -> None:
            self._module = module

        def _items(self) -> list:
            return list(self._module.state_dict(keep_vars=True).items())

        def metadata(self) -> list:
            return [ParamMeta(n, t.dtype, tuple(t.shape)) for n, t in self._items()]

        def __iter__(self) -> Iterator[tuple[str, Any]]:
            for n, t in self._items():
                yield n, materialize_full_tensor(t.detach())

    return _FullStateDict(model)


class NativeWeightSender:
    """Trainer-side sender for the GPU path (learner rank 0 builds it once, calls `push` every step).

    UNTESTED here (needs CUDA). `backend="nccl"`: separate GPUs, `world_size = 1 + num_engines * tp`, weights
    broadcast in packed buckets of `bucket_bytes`. `backend="ipc"`: rollout colocated with the learner on the
    same GPUs; every learner rank builds a sender (rank 0 ships the merged handles).
    """

    def __init__(self, model: Any, client: RolloutFleetClient, *, backend: str = "nccl", rank: int = 0,
                 master_address: str | None = None, master_port: int | None = None,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES):
        import torch

        if not torch.cuda.is_available():
            raise RuntimeError("NativeWeightSender needs CUDA; on CPU push safetensors bytes "
                               "(RolloutPool.push_weights) instead")
        from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

        source = full_state_dict_source(model)
        if backend == "nccl":
            from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

            if master_address is None or master_port is None:
                raise ValueError("backend='nccl' needs master_address and master_port for the rendezvous")
            info: Any = NCCLTrainerInitInfo(
                master_address=master_address, master_port=master_port,
                world_size=1 + len(client.workers) * client.tp, rank=rank,
                packed=True, packed_buffer_size_bytes=bucket_bytes)
        elif backend == "ipc":
            from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

            info = IPCTrainerInitInfo(rank=rank, packed=True, packed_buffer_size_bytes=bucket_bytes)
        else:
            raise ValueError(f"backend must be 'nccl' or 'ipc', got {backend!r}")
        self.client = client
        self._lock = threading.Lock()
        self.engine = WeightTransferTrainerFactory.trainer_init(info, client=client, source=source)

    def push(self, version: int) -> None:
        """Send the current weights; returns after every engine committed `version`."""
        with self._lock:
            self.client.version = version
            self.engine.send_weights()

    def shutdown(self) -> None:
        self.engine.shutdown()
