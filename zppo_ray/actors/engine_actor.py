"""One vLLM engine in a Ray actor: the shell rollout workers and teacher replicas share (health, lifecycle,
timed generation), and the helpers that turn a role's config into engine arguments and Ray options."""

from __future__ import annotations

import time
from typing import Any

from zppo_ray.types import GenRequest, Sample

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "max_tokens", "seed", "presence_penalty", "logprobs")


def sampling_kwargs(sampling: dict) -> dict:
    """Validate a sampling dict (keys of VLLMEngine.generate); typos fail loudly instead of being ignored."""
    unknown = set(sampling) - set(SAMPLING_KEYS)
    if unknown:
        raise ValueError(f"unknown sampling keys {sorted(unknown)}; allowed: {', '.join(SAMPLING_KEYS)}")
    return dict(sampling)


def engine_kwargs(model_cfg: Any, *, tp: int, seed: int, kv_cache_gib: float, gpu_memory_utilization: float,
                  max_num_seqs: int = 256, **extra: Any) -> dict:
    """VLLMEngine keyword arguments from a ModelConfig and the role's resources."""
    return dict(tokenizer=model_cfg.tokenizer, dtype=model_cfg.dtype, max_model_len=model_cfg.max_model_len,
                tp=tp, seed=seed, kv_cache_gib=kv_cache_gib, gpu_memory_utilization=gpu_memory_utilization,
                max_num_seqs=max_num_seqs, trust_remote_code=model_cfg.trust_remote_code, **extra)


def actor_options(num_cpus: float, num_gpus: int, tp: int, resources: dict | None = None) -> tuple[dict, Any]:
    """Ray options for an engine actor, and the placement group it owns (None if none).

    `resources`: custom Ray resources every actor of the role (every bundle, for TP > 1) asks for: they pin
    the role to the nodes that offer them (`placement` in the config; KubeRay worker groups declare them).

    TP > 1 reserves one bundle per tensor-parallel shard and the actor sits in bundle 0, capturing child
    tasks, on GPU and CPU alike:
    * GPU: vLLM's Ray executor (`distributed_executor_backend="ray"`, see `tp_engine_kwargs`) places its TP
      workers in the actor's *current* placement group, so the actor holds no GPU itself and the bundles may
      sit on several nodes (PACK). UNTESTED here (no GPU).
    * CPU: vLLM refuses its Ray executor there ("current platform cpu does not support ray."), so the TP
      workers are the actor's own processes (`"mp"`): the bundles reserve their cores on the actor's node
      (STRICT_PACK). Run here with TP = 2 (tests/recovery/test_chaos.py).
    """
    extra = dict(resources or {})
    if tp > 1:
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        bundle = {"CPU": num_cpus, **({"GPU": 1} if num_gpus else {}), **extra}
        pg = placement_group([dict(bundle) for _ in range(tp)], strategy="PACK" if num_gpus else "STRICT_PACK")
        strategy = PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=0,
                                                    placement_group_capture_child_tasks=True)
        return dict(num_cpus=num_cpus, num_gpus=0, resources=extra, scheduling_strategy=strategy), pg
    return dict(num_cpus=num_cpus, num_gpus=num_gpus, resources=extra), None


def tp_engine_kwargs(num_gpus: int, tp: int) -> dict:
    """Extra engine kwargs matching `actor_options`: vLLM's Ray executor for TP > 1 on GPU, its process
    executor on CPU (inside a Ray actor vLLM would otherwise pick Ray, which refuses the CPU platform)."""
    if tp <= 1:
        return {}
    return {"distributed_executor_backend": "ray" if num_gpus else "mp"}


class EngineActor:
    """Shared shell: build the engine in the actor process; health, sleep/wake, timed generation."""

    def __init__(self, model_path: str, engine_kwargs: dict, name: str = "engine"):
        from zppo_ray.engine.vllm_engine import VLLMEngine

        self.name = name
        self.engine = VLLMEngine(model_path, **engine_kwargs)
        self.generated_tokens = 0
        self.last_push_seconds: float | None = None

    def version(self) -> int:
        return self.engine.version

    def health(self) -> dict:
        import os

        return {"name": self.name, "alive": True, "version": self.engine.version, "pid": os.getpid(),
                "device": "cuda" if self.engine.on_gpu else "cpu", "model": self.engine.model_path,
                "start_seconds": round(self.engine.start_seconds, 2), "generated_tokens": self.generated_tokens,
                "last_push_seconds": self.last_push_seconds}

    def sleep(self, level: int = 1) -> None:
        self.engine.sleep(level)

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.engine.wake_up(tags)

    def shutdown(self) -> None:
        self.engine.shutdown()

    def _generate(self, requests: list[GenRequest], sampling: dict) -> list[list[Sample]]:
        t0 = time.perf_counter()
        out = self.engine.generate(requests, **sampling_kwargs(sampling))
        tokens = sum(len(s.completion_ids) for group in out for s in group)
        self.generated_tokens += tokens
        self._observe_generate(len(requests), tokens, time.perf_counter() - t0)
        return out

    def _observe_generate(self, n_requests: int, tokens: int, seconds: float) -> None:
        """Rollout workers export their throughput; the teacher's verbs are timed per operation instead."""
