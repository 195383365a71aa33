"""Pushing weights the test holds into a vLLM engine the way the weight sync does (zppo_ray/weights):
safetensors buckets, announced, loaded one by one, then committed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def safetensors_bytes(state_dict: Mapping) -> bytes:
    """Contiguous CPU copies (tied tensors duplicated: safetensors refuses shared storage)."""
    from safetensors.torch import save

    return save({k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()})


def push_buckets(engine, blobs: Sequence[bytes], version: int) -> float:
    """begin_weights(every name) → load_bucket each → commit_weights(version); the engine-side seconds."""
    from safetensors import deserialize

    engine.begin_weights([name for blob in blobs for name, _ in deserialize(blob)])
    for blob in blobs:
        engine.load_bucket(blob)
    return engine.commit_weights(version)
