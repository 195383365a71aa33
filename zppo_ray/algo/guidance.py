"""The teacher-guided baselines of spec §5 as pure functions: Hint, Prefix, teacher-response injection.

Each one starts where ZPPO's BCQ starts: the kept hard questions (hardest first, under the ρ_aug cap) and
the teacher's graded samples for them. Where ZPPO shows the student a correct and a wrong candidate, these
baselines instead
- Hint: ask the teacher to turn one correct sample into an answer-free hint; the student answers the
  question with the hint appended, as an extra group under its own uid;
- Prefix: force the first α of one correct teacher sample (in student tokens) as a shared prefix; the
  student continues it, the prefix is masked out of the loss;
- teacher_inject: add one correct teacher response to the student's own plain group, as if it were one
  more rollout (LUFFY-style; off-policy, since the student did not sample it).

No Ray, no models: the controller does the calls, these functions decide what to ask for.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from zppo_ray.algo.zppo import Group

GUIDANCE_KINDS = ("hint", "prefix", "inject")  # zppo_ray/algo/methods.py maps a method to one of them


@dataclass
class Guidance:
    """One kept hard question and the correct teacher sample chosen to guide it."""

    qid: str
    kind: str  # "hint" | "prefix" | "inject"
    teacher_text: str


def choose_guidance(kept: list[str], teacher: dict[str, Group], cap: int, kind: str,
                    rng: random.Random) -> list[Guidance]:
    """One instance per kept question that has a correct teacher sample (chosen uniformly), hardest first,
    at most `cap`. A question whose teacher samples are all wrong gets nothing on this visit, like BCQ."""
    if kind not in GUIDANCE_KINDS:
        raise ValueError(f"unknown guidance kind {kind!r}; one of {', '.join(GUIDANCE_KINDS)}")
    out: list[Guidance] = []
    for qid in kept:
        if len(out) >= cap:
            break
        t = teacher.get(qid)
        if t is not None and t.correct():
            out.append(Guidance(qid, kind, t.texts[rng.choice(t.correct())]))
    return out


def inject(group: Group, teacher_text: str, answer: str | None) -> Group:
    """The plain group with the verified teacher response appended as one more (reward 1) member.

    A new Group: the original stays untouched because the buffer refresh must see plain accuracies only.
    """
    return Group(group.qid, group.texts + [teacher_text], group.rewards + [1.0],
                 (group.answers or [None] * len(group.texts)) + [answer])
