"""Which weights travel together in one push bucket: whole decoder layers, merged up to a byte budget.

Pure and Ray-free. A bucket is the unit of everything that is bounded in a push: the learner gathers one
bucket of ZeRO-3 shards at a time, serialises it, and the engines load it before the next one exists, so
the extra memory on each side is one bucket however large the model is.

Layers stay whole because vLLM's layer-wise reload (`initialize_layerwise_reload`) processes a layer (the
CPU backend's repacking included) as soon as all of its weights arrived: a bucket that ends mid-layer only
delays that, but a layer split over buckets would hold its half-loaded tensors across the boundary.
"""

from __future__ import annotations

from collections.abc import Sequence


def layer_key(name: str) -> tuple[str, int] | None:
    """(prefix, index) of the outermost integer segment, e.g. ("model.layers", 3) for
    "model.layers.3.mlp.up_proj.weight"; None for un-indexed names (embeddings, final norm, lm_head).
    The outermost index keeps a layer whole whatever it nests (experts, vision blocks)."""
    parts = name.split(".")
    for i, part in enumerate(parts):
        if part.isdigit():
            return ".".join(parts[:i]), int(part)
    return None


def layer_groups(names: Sequence[str]) -> list[list[str]]:
    """Consecutive names split where the layer changes (un-indexed names group with their neighbours)."""
    groups: list[list[str]] = []
    last: object = object()
    for name in names:
        key = layer_key(name)
        if not groups or (key is not None and key != last):
            groups.append([])
        groups[-1].append(name)
        if key is not None:
            last = key
    return groups


def plan_buckets(sizes: Sequence[tuple[str, int]], max_bytes: int) -> list[list[str]]:
    """`(name, nbytes)` in model order → buckets of names: whole layers merged while the bucket stays
    within `max_bytes`; a single layer bigger than that is a bucket of its own. Every name appears once,
    in the given order."""
    if max_bytes <= 0:
        raise ValueError(f"bucket size must be positive, got {max_bytes} bytes")
    size = dict(sizes)
    if len(size) != len(sizes):
        raise ValueError("duplicate weight names in one push")
    buckets: list[list[str]] = []
    used = 0
    for group in layer_groups([n for n, _ in sizes]):
        n = sum(size[x] for x in group)
        if buckets and used + n <= max_bytes:
            buckets[-1].extend(group)
            used += n
        else:
            buckets.append(list(group))
            used = n
    return buckets
