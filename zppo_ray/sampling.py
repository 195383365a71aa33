"""Every sampling dict of a run, built from the config in one place (keys of VLLMEngine.generate).

Roles: the student's rollouts (training recipe: temperature 1, top-p 1), the teacher's solutions, the
paper's evaluation decoding (temperature 0.6, top-p 0.95, top-k 20, presence penalty), and greedy service
calls (compress, judge, hint: a rewrite, not an exploration). `seeds`: one per request
(zppo_ray/seeds.py), or one int for the whole call.
"""

from __future__ import annotations

from typing import Any


def student(rollout_cfg: Any, seeds: Any) -> dict:
    r = rollout_cfg
    return dict(temperature=r.temperature, top_p=r.top_p, top_k=r.top_k, max_tokens=r.max_new_tokens, seed=seeds)


def teacher(teacher_cfg: Any, seeds: Any) -> dict:
    t = teacher_cfg
    return dict(temperature=t.temperature, top_p=t.top_p, max_tokens=t.max_new_tokens, seed=seeds)


def evaluation(eval_cfg: Any, seeds: Any = 0) -> dict:
    e = eval_cfg
    return dict(temperature=e.temperature, top_p=e.top_p, top_k=e.top_k, max_tokens=e.max_new_tokens,
                presence_penalty=e.presence_penalty, seed=seeds, logprobs=False)


def greedy(max_tokens: int, seeds: Any = None) -> dict:
    """Temperature 0 (vLLM decodes n copies of n=1), no logprobs: the teacher's service verbs."""
    out: dict = dict(temperature=0.0, max_tokens=max_tokens, logprobs=False)
    if seeds is not None:
        out["seed"] = seeds
    return out
