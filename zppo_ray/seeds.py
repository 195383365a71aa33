"""Every sampling seed of a run, derived from what identifies the sample (spec: reproducible, no shared noise).

vLLM seeds one generator per request and gives sample j of an n-sample request the seed `seed + j`
(its parallel-sampling child requests). Seeds that are consecutive integers per request (`base + i`)
therefore collide: sample j+1 of request i draws the same noise as sample j of request i+1, and a second
call offset by one repeats the first shifted by one. Hashing (run seed, step, role, request id) spreads
request seeds over 62 bits, so two samples of a run share a seed only if two hashes land within n of each
other (probability ~ n * requests² / 2^62).
"""

from __future__ import annotations

import hashlib

SEED_BITS = 62  # room for vLLM's `+ j` per sample below 2^63


def derive_seed(*parts: object) -> int:
    """A stable 62-bit seed from any parts (ints, strings); the same parts give the same seed anywhere."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)


def request_seeds(seed: int, n: int) -> list[int]:
    """Seeds of the n requests of one call given a single call seed (callers without request ids)."""
    return [derive_seed(seed, i) for i in range(n)]


def seeds_for_part(sampling: dict, idx: list[int]) -> dict:
    """The sampling of the requests at positions `idx` of a call that is split across replicas: a request
    keeps the seed of its position in the whole call, whatever replica serves it (retries included)."""
    seed = sampling.get("seed")
    if isinstance(seed, int):
        seed = request_seeds(seed, max(idx, default=-1) + 1)
    if isinstance(seed, (list, tuple)):
        return dict(sampling, seed=[seed[i] for i in idx])
    return sampling
