"""The metrics of one training step, from what the step produced (pure: the trainer hands in its records)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from typing import Any


def _mean(xs: Iterable[float]) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def step_metrics(step: int, version: int, data_epoch: int, batch: list, replay: list, plain: dict, hard: list,
                 teacher: dict, reform: list, refresh: dict, learn: dict, seconds: dict, push_s: float) -> dict[str, Any]:
    """`plain` / `teacher`: {qid: Group}; `reform`: (uid "kind:qid", Group, samples) of the extra groups."""
    replay_ids = {q.id for q in replay}
    kind_groups: dict[str, list] = defaultdict(list)
    for uid, g, _ in reform:
        kind_groups[uid.split(":", 1)[0]].append(g)
    out: dict[str, Any] = {
        "step": step,
        "version": version,
        "n_prompts": len(batch),
        "n_replay": len(replay),
        "plain_reward": _mean(g.mean for g in plain.values()),
        "new_reward": _mean(plain[q.id].mean for q in batch if q.id not in replay_ids and q.id in plain),
        "replay_reward": _mean(plain[q.id].mean for q in replay if q.id in plain),
        "n_hard": len(hard),
        "teacher_reward": _mean(g.mean for g in teacher.values()),
        "teacher_solved": sum(bool(g.correct()) for g in teacher.values()),
    }
    for kind in ("bcq", "ncq", "hint", "prefix"):
        out[f"n_{kind}"] = len(kind_groups[kind])
        out[f"{kind}_reward"] = _mean(g.mean for g in kind_groups[kind])
    out.update(buffer_size=refresh["size"], admitted=refresh["admitted"], graduated=refresh["graduated"],
               evicted=refresh["evicted"], data_epoch=data_epoch, push_seconds=push_s, learn=learn, time=seconds)
    return out
