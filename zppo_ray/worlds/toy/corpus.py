"""Pretraining documents for the toy student and teacher.

Every document is a (prompt, completion) pair whose prompt is built by the same functions the trainer
uses (`zppo_ray.algo.reformulate`), so nothing the models meet during RL is alien to them:

- student: plain questions, where a share of the hard tier's worked solutions stop after two steps (its
  habit, `shortcut`: the one thing that keeps it weak on the hard tier), and the "reading references"
  documents a pretrained LLM would have seen: questions followed by candidate solutions (one right,
  one wrong; or several wrong) and a solution that uses them, and questions with a hint;
- teacher: plain questions of every tier (weighted towards the hard tier), and its three service
  verbs: compress a candidate (keeping its mistakes), turn a solution into an answer-free hint, and
  judge a response against a gold answer with strict JSON.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence

from zppo_ray.algo.reformulate import (
    Templates,
    build_bcq,
    build_compression_prompt,
    build_hint_prompt,
    build_hinted_question,
    build_judge_prompt,
    build_ncq,
    question_prompt,
)
from zppo_ray.data.schema import Question
from zppo_ray.worlds.toy.world import Expr, expr_of, shortcut_solution, solution_text, wrong_solution


def compressed(solution: str) -> str:
    """What a faithful compression of a toy solution is: the chain on one line, then the boxed answer.

    Toy solutions have no exploration to remove, so compression drops the <think> wrapper only and
    keeps every step, mistakes included (a compressor must never repair a wrong candidate).
    """
    work, _, tail = solution.partition("</think>")
    return work.replace("<think>", "").strip() + "\n" + tail.strip()


def hint_for(expr: Expr) -> str:
    """An answer-free hint: where to start and in which order (it gives away no result)."""
    return f"Start with {expr.nums[0]}{expr.ops[0]}{expr.nums[1]} and go from left to right."


def _candidate(sol: str, rng: random.Random) -> str:
    # Half of the candidates come compressed (compression on), half raw (compression off).
    return compressed(sol) if rng.random() < 0.5 else sol


def student_doc(q: Question, rng: random.Random, t: Templates, mix: dict[str, float],
                shortcut: float | None = None) -> tuple[str, str]:
    """`shortcut`: the share of this tier's plain solutions that stop after two steps (the student's habit
    on long chains, see ToyModelConfig.shortcut). None: no habit and no draw (the tokenizer's corpus)."""
    expr = expr_of(q)
    right, _ = solution_text(expr, choices=q.choices)
    kind = rng.choices(list(mix), weights=list(mix.values()))[0]
    if kind == "bcq" and expr.ops:
        wrong, _ = wrong_solution(expr, rng, q.choices)
        prompt, _ = build_bcq(q.text, _candidate(right, rng), _candidate(wrong, rng), rng, t)
        return prompt, right
    if kind == "ncq" and expr.ops:
        wrongs = [wrong_solution(expr, rng, q.choices) for _ in range(rng.randint(1, 4))]
        prompt = build_ncq(q.text, [a for _, a in wrongs], [_candidate(w, rng) for w, _ in wrongs], t)
        return prompt, right
    if kind == "hint" and expr.ops:
        return build_hinted_question(q.text, hint_for(expr), t), right
    # one draw per plain solution, whatever the share, so that the documents of the other tiers do not
    # depend on it
    if shortcut is not None and rng.choices(("full", "short"), weights=(1 - shortcut, shortcut))[0] == "short" \
            and len(expr.ops) > 2:
        return question_prompt(q.text, t), shortcut_solution(expr)
    return question_prompt(q.text, t), right


def teacher_doc(q: Question, rng: random.Random, t: Templates, mix: dict[str, float]) -> tuple[str, str]:
    expr = expr_of(q)
    right, _ = solution_text(expr, choices=q.choices)
    kind = rng.choices(list(mix), weights=list(mix.values()))[0]
    if kind in ("compress", "judge") and expr.ops:
        sol, _ = wrong_solution(expr, rng, q.choices) if rng.random() < 0.5 else (right, None)
        if kind == "compress":
            return build_compression_prompt(sol, t), f"<{t.summary_tag}>\n{compressed(sol)}\n</{t.summary_tag}>"
        verdict = "correct" if sol == right else "wrong"
        return build_judge_prompt(q.text, q.answer, sol, t), json.dumps({"verdict": verdict})
    if kind == "hint" and expr.ops:
        return build_hint_prompt(right, t), hint_for(expr)
    return question_prompt(q.text, t), right


STUDENT_MIX = {"solve": 0.7, "bcq": 0.15, "ncq": 0.1, "hint": 0.05}
# The paper's compression prompt shows the response alone (no question): the teacher must copy a chain,
# mistakes included, which a 2-layer model learns only from enough examples (at 5% it made up new chains).
TEACHER_MIX = {"solve": 0.7, "compress": 0.2, "judge": 0.05, "hint": 0.05}
# The tokenizer's corpus uses these frozen mixes, not the training ones: a tokenizer (and with it every cached
# model) must not change when one model's training mix does. They are the mixes the tokenizer was first
# built with.
TOKENIZER_MIXES = {"student": STUDENT_MIX, "teacher": {"solve": 0.85, "compress": 0.05, "judge": 0.05, "hint": 0.05}}


def documents(questions: Sequence[Question], tier_weights: dict[str, float], n: int, seed: int,
              role: str, templates: Templates | None = None,
              shortcut: dict[str, float] | None = None, mix: dict[str, float] | None = None) -> list[tuple[str, str]]:
    """`n` documents for `role` ("student" | "teacher"), questions drawn with `tier_weights`; `shortcut`
    (student only): per tier, the share of plain solutions that stop after two steps."""
    rng = random.Random(f"{seed}:{role}")
    t = templates or Templates()
    by_tier: dict[str, list[Question]] = {}
    for q in questions:
        by_tier.setdefault(q.tier, []).append(q)
    tiers = [k for k in tier_weights if tier_weights[k] > 0 and k in by_tier]
    if not tiers:
        raise ValueError(f"no questions in the weighted tiers {sorted(tier_weights)}; have {sorted(by_tier)}")
    make = student_doc if role == "student" else teacher_doc
    mix = mix or (STUDENT_MIX if role == "student" else TEACHER_MIX)
    docs = []
    for _ in range(n):
        tier = rng.choices(tiers, weights=[tier_weights[k] for k in tiers])[0]
        q = rng.choice(by_tier[tier])
        docs.append(make(q, rng, t, mix, None if shortcut is None else shortcut.get(tier, 0.0))
                    if role == "student" else make(q, rng, t, mix))
    return docs
