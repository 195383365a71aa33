"""Learner → rollout weight push: the vLLM worker extension and the trainer-side GPU sender.

Lifecycle (one rollout engine, one policy version at a time)
-----------------------------------------------------------
1. **Start.** The engine is built with `worker_extension_cls = "zppo_ray.engine.weight_sync.WeightSyncExtension"`;
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
4. **GPU.** The same path runs on GPU (the blob is the learner's state dict on rank 0). vLLM's native
   weight-transfer API (NCCL between GPUs, CUDA IPC when colocated) would avoid the serialisation; it is
   not implemented here (a later issue builds it behind one weight-sync interface).

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
from collections.abc import Iterator, Mapping
from typing import Any

EXTENSION_QUALNAME = "zppo_ray.engine.weight_sync.WeightSyncExtension"
SHM_THRESHOLD_BYTES = 512 * 2**20  # bigger blobs go through one /dev/shm file instead of the RPC channel


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
