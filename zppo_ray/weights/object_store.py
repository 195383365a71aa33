"""The CPU weight path: learner rank 0 → Ray object store → every rollout worker, one bucket at a time.

Per push: every worker starts a layer-wise reload of the names the learner will send; the learner ranks
stream the model bucket by bucket (a Ray streaming generator on each rank: ZeRO-3 gathers are collective,
rank 0 serialises and yields, the object store holds at most two buckets because of the generator's
backpressure); each bucket's reference goes to every worker, which fetches it from the learner's node and
loads it; the reference is dropped before the next bucket is asked for. The pool then commits the version
on every worker that finished (zppo_ray/actors/rollout.py `update_weights`).

Memory per push, whatever the model size: learner rank 0 holds one serialised bucket (and under ZeRO-3 the
gathered tensors it was made from); the object store up to two; each rollout worker one bucket, written to
one /dev/shm file that vLLM's workers read tensor by tensor (plus the layers vLLM is processing); the driver
nothing but references. Measured: benchmarks/results/weight_push/.
"""

from __future__ import annotations

from typing import Any

from zppo_ray.weights import PoolSync


class ObjectStoreSync(PoolSync):
    name = "object_store"

    def __init__(self, bucket_bytes: int):
        if bucket_bytes <= 0:
            raise ValueError(f"rollout.weight_bucket_mb must be positive, got {bucket_bytes} bytes")
        self.bucket_bytes = bucket_bytes

    def _transfer(self, calls: Any) -> None:
        """Begin on every worker, then each bucket to every worker still alive (the pool commits)."""
        calls.each("begin_weights", self.names)
        n = 0
        try:
            for ref in self.learner.stream_weights(self.bucket_bytes):
                calls.each("load_bucket", ref)
                n += 1
        except Exception:
            self.learner.raise_if_lost("a weight push")  # a dead rank is the learner's failure, not the pool's
            raise
        self.last_buckets = n
