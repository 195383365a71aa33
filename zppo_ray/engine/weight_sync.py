"""The vLLM worker extension that loads pushed weights, bucket by bucket, inside every worker process.

The engine is built with `worker_extension_cls = "zppo_ray.engine.weight_sync.WeightSyncExtension"`; vLLM
mixes the class into its worker class, so each method runs in each worker process (one per tensor-parallel
rank) with `self` being the vLLM worker, reached through `LLM.collective_rpc`.

One push is three calls (the CPU path of `zppo_ray.weights`; the GPU path uses vLLM's own weight-transfer
engine, whose worker methods have the same shape):
1. `zppo_begin_reload(names)`: the full list of names this push will deliver. Refuses the tied-embedding
   trap (below), then starts vLLM's layer-wise reload (`initialize_layerwise_reload`): every layer's
   tensors move to the meta device and its loaders buffer what arrives.
2. `zppo_load_bucket_file(path)` per bucket: a safetensors file the engine wrote to /dev/shm, read tensor
   by tensor (or `zppo_load_bucket(blob)`, the bytes themselves through collective_rpc, where the workers
   do not share the engine's /dev/shm; tensors cannot be pickled there, "cannot pickle memoryview"),
   fed to `model.load_weights`. A layer is
   processed, the CPU backend's repacking of linear weights included, and copied back into its original
   storage as soon as all its weights arrived; each TP rank shards the full tensors itself. A plain
   `model.load_weights` outside this lifecycle skips the repacking and leaves stale packed weights.
3. `zppo_finish_reload()`: checks every announced name arrived, then `finalize_layerwise_reload`.
   Only after every worker of every engine finished does the engine reset its prefix cache (cached KV
   blocks belong to the old weights) and commit the new version (zppo_ray/engine/vllm_engine.py).

Between 1 and 3 the model is not servable (layers not yet reloaded sit on the meta device); the rollout pool
never generates during a push, and a push that fails half-way leaves the pool refusing to serve until a
push succeeds (zppo_ray/actors/rollout.py). Peak extra memory per worker: one bucket plus the layers of
that bucket being processed.

Tied-embedding trap: a tied model's `save_pretrained()` folder has no `lm_head.weight`, and vLLM then keeps
a stale lm_head with only a warning ("ParallelLMHead: Failed to load weights"). The learner therefore always
sends the full `state_dict()` (which names the tied tensor under both keys) and `zppo_begin_reload` refuses a
push without `lm_head.weight` for a tied model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

EXTENSION_QUALNAME = "zppo_ray.engine.weight_sync.WeightSyncExtension"


class WeightSyncExtension:
    """Mixed into vLLM's worker class; runs in every worker process. Names are prefixed `zppo_` because
    vLLM refuses an extension whose attributes collide with the worker's own."""

    def zppo_begin_reload(self, names: list[str]) -> int:
        """Start a push of exactly `names`; returns how many."""
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        self.zppo_check_names(names)
        self._zppo_expected, self._zppo_received = set(names), set()
        with set_current_vllm_config(self.vllm_config):  # type: ignore[attr-defined]
            initialize_layerwise_reload(self.model_runner.get_model())  # type: ignore[attr-defined]
        return len(names)

    def zppo_load_bucket(self, blob: bytes) -> int:
        """Load one bucket of safetensors bytes; returns the number of tensors in it."""
        from safetensors.torch import load

        tensors = load(bytes(blob))
        return self._zppo_load(list(tensors), iter(tensors.items()))

    def zppo_load_bucket_file(self, path: str) -> int:
        """Load one bucket from a safetensors file (under /dev/shm), tensor by tensor; returns how many."""
        from safetensors import safe_open

        with safe_open(path, framework="pt", device="cpu") as f:
            names = list(f.keys())
            return self._zppo_load(names, ((n, f.get_tensor(n)) for n in names))

    def _zppo_load(self, names: list[str], tensors: Iterator[tuple[str, Any]]) -> int:
        from vllm.config import set_current_vllm_config

        expected = getattr(self, "_zppo_expected", None)
        if expected is None:
            raise RuntimeError("weight bucket without a zppo_begin_reload: the push protocol was not followed")
        stray = sorted(set(names) - expected)
        if stray:
            raise ValueError(f"weight bucket names {stray[:3]} that the push did not announce")
        with set_current_vllm_config(self.vllm_config):  # type: ignore[attr-defined]
            self.model_runner.get_model().load_weights(tensors)  # type: ignore[attr-defined]
        self._zppo_received.update(names)
        return len(names)

    def zppo_finish_reload(self) -> int:
        """Finish the push; refuses one that did not deliver every announced name. Returns tensors loaded."""
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        expected, received = getattr(self, "_zppo_expected", None), getattr(self, "_zppo_received", set())
        if expected is None:
            raise RuntimeError("zppo_finish_reload without a zppo_begin_reload")
        missing = sorted(expected - received)
        if missing:
            raise RuntimeError(f"weight push incomplete: {len(missing)} announced tensor(s) never arrived, "
                               f"e.g. {missing[:3]}")
        with set_current_vllm_config(self.vllm_config):  # type: ignore[attr-defined]
            finalize_layerwise_reload(self.model_runner.get_model(), self.model_config)  # type: ignore[attr-defined]
        self._zppo_expected = None
        runner = self.model_runner  # type: ignore[attr-defined]
        runner.reset_encoder_cache()  # derived from the old weights, as vLLM's own reload_weights resets them
        runner.reset_mm_cache()
        return len(received)

    def zppo_check_names(self, names: list[str]) -> None:
        """Refuse the tied-embedding trap (module doc)."""
        cfg = self.model_config.hf_config  # type: ignore[attr-defined]
        text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        tied = getattr(text_cfg, "tie_word_embeddings", getattr(cfg, "tie_word_embeddings", False))
        if tied and not any(n.endswith("lm_head.weight") for n in names):
            raise ValueError("weight push has no 'lm_head.weight' but the model ties embeddings: send the FULL "
                             "state_dict() (it names the tied tensor twice); a save_pretrained() folder is not enough")

    def zppo_param_checksum(self) -> float:
        """Sum of |params| of this rank's model: a cheap "did the weights change" probe for tests/health."""
        import torch

        model = self.model_runner.get_model()  # type: ignore[attr-defined]
        with torch.no_grad():
            return float(sum(p.detach().float().abs().sum().item() for p in model.parameters()))
