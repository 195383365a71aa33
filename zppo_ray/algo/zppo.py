"""ZPPO's per-step reformulation (spec §2 steps 3-7) as pure functions over graded groups.

The controller calls them in order:

    hard = hard_questions(plain, tau, rng)                  # step 3 (+ hardest-first order, random ties)
    kept = pre_cap(hard, eligible, aug_cap(rho_aug, n_new)) # step 5
    instances = choose_instances(kept, plain, teacher, ...) # step 6 (which candidates, under the cap)
    ... compress every instance's candidates (teacher) ...
    prompt = render_instance(instance, question, compressed, ...)   # BCQ / NCQ prompt text

No Ray, no models: everything here is unit-tested with hand-built groups.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from zppo_ray.algo.advantages import compute_advantages
from zppo_ray.algo.reformulate import Templates, build_bcq, build_ncq
from zppo_ray.algo.selection import plan_instances, select_hardest
from zppo_ray.types import TrainItem


@dataclass
class Group:
    """One prompt's graded samples: texts, binary rewards and parsed final answers."""

    qid: str
    texts: list[str]
    rewards: list[float]
    answers: list[str | None] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return sum(self.rewards) / len(self.rewards) if self.rewards else 0.0

    def correct(self) -> list[int]:
        return [i for i, r in enumerate(self.rewards) if r > 0.5]

    def wrong(self) -> list[int]:
        return [i for i, r in enumerate(self.rewards) if r <= 0.5]


@dataclass
class Instance:
    """A planned reformulation: which question, which kind, which raw candidates in which order."""

    qid: str
    kind: str  # "bcq" | "ncq"
    candidates: list[str]  # BCQ: [correct teacher, wrong student]; NCQ: every wrong plain rollout
    wrong_answers: list[str | None] = field(default_factory=list)  # NCQ: parsed answers of those rollouts


def hard_questions(plain: dict[str, Group], tau: float, rng: random.Random) -> list[str]:
    """Step 3 + the ordering of step 5: ids with plain accuracy < tau, hardest first, ties in random order.

    Why random ties: the batch lists new questions before replayed ones, and many hard questions share an
    accuracy (0/8 above all); a stable sort would then give every reformulation slot to new questions and
    never re-serve a buffered one with fresh candidates, which is the point of the buffer (spec §2).
    """
    ids = [q for q, g in plain.items() if g.mean < tau]
    rng.shuffle(ids)
    return select_hardest({q: plain[q].mean for q in ids}, len(ids))


def has_teacher_positive(qid: str, teacher: dict[str, Group]) -> bool:
    return bool(teacher.get(qid) and teacher[qid].correct())


def can_reformulate(qid: str, plain: dict[str, Group], teacher: dict[str, Group], enable_bcq: bool,
                    enable_ncq: bool) -> bool:
    """Whether the question can get at least one ENABLED instance this visit (paper App. C's pre-cap takes
    only such questions: with BCQ alone, a question the teacher failed would waste a kept slot)."""
    if not plain[qid].wrong():
        return False
    return enable_ncq or (enable_bcq and has_teacher_positive(qid, teacher))


def pre_cap(hard: list[str], eligible, cap: int) -> list[str]:
    """Step 5: the first `cap` hardest questions among those `eligible(qid)` accepts."""
    return [q for q in hard if eligible(q)][:cap]


def choose_instances(kept: list[str], plain: dict[str, Group], teacher: dict[str, Group], cap: int,
                     enable_bcq: bool, enable_ncq: bool, rng: random.Random) -> list[Instance]:
    """Step 6: BCQ then NCQ per question, hardest first, stopping at the first instance over the cap.

    BCQ takes one correct teacher sample and one wrong student sample, each uniformly at random; a
    question whose teacher samples are all wrong (or missing) gets no BCQ on this visit. NCQ takes every
    wrong plain rollout.
    """
    has_pos = {q: has_teacher_positive(q, teacher) for q in kept}
    has_wrong = {q: bool(plain[q].wrong()) for q in kept}
    out: list[Instance] = []
    for qid, kind in plan_instances(kept, has_pos, has_wrong, cap, enable_bcq, enable_ncq):
        p = plain[qid]
        if kind == "bcq":
            t = teacher[qid]
            right = t.texts[rng.choice(t.correct())]
            wrong = p.texts[rng.choice(p.wrong())]
            out.append(Instance(qid, "bcq", [right, wrong]))
        else:
            idx = p.wrong()
            out.append(Instance(qid, "ncq", [p.texts[i] for i in idx],
                                [p.answers[i] if p.answers else None for i in idx]))
    return out


def render_instance(instance: Instance, question_text: str, compressed: list[str], rng: random.Random,
                    templates: Templates, list_unparseable: bool = False) -> str:
    """The student prompt of one instance, from its compressed (or truncated) candidates."""
    if len(compressed) != len(instance.candidates):
        raise ValueError(f"{instance.kind} {instance.qid}: {len(compressed)} compressed candidates for "
                         f"{len(instance.candidates)} planned")
    if instance.kind == "bcq":
        prompt, _ = build_bcq(question_text, compressed[0], compressed[1], rng, templates)
        return prompt
    if instance.kind == "ncq":
        return build_ncq(question_text, instance.wrong_answers, compressed, templates, list_unparseable)
    raise ValueError(f"unknown instance kind {instance.kind!r}")


def informative_groups(groups: list[tuple[str, Group, list]], by: str) -> list[tuple[str, Group, list]]:
    """Dynamic sampling: the groups (uid, Group, samples) that stay in the loss.

    by="group" (DAPO): every group whose rewards are all equal goes. by="question" (the variant the paper
    proposes in its §10 but never ran): a question's groups go only when its plain, BCQ and NCQ groups are
    all degenerate, so an all-wrong plain group stays when a reformulation of the same question carries a
    signal (its advantage is still 0; it weighs in the token mean)."""
    def live(g: Group) -> bool:
        return len(set(g.rewards)) > 1

    if by == "group":
        return [x for x in groups if live(x[1])]
    if by == "question":
        keep = {g.qid for _, g, _ in groups if live(g)}
        return [x for x in groups if x[1].qid in keep]
    raise ValueError(f"dynamic sampling by {by!r}: expected 'group' or 'question'")


def train_items(groups: list[tuple[str, Group, list]], questions: dict, advantage: str, eps: float,
                overlong_filter: bool) -> list[TrainItem]:
    """Step 8: one TrainItem per sample of `groups` ((uid, Group, samples)), with its group advantage and its
    question's images (the learner's context must be the one the student sampled in). `overlong_filter`:
    a sample cut at the token limit keeps its place in the group statistics but loses its loss tokens."""
    if not groups:
        return []
    rewards = torch.tensor([r for _, g, _ in groups for r in g.rewards], dtype=torch.float32)
    uids = [uid for uid, g, _ in groups for _ in g.rewards]
    adv = compute_advantages(advantage, rewards, uids, eps).tolist()
    items = []
    for (uid, g, samples), s in ((x, s) for x in groups for s in x[2]):
        mask = s.loss_mask
        if overlong_filter and s.finish_reason == "length":  # a cut-off answer is not a wrong one
            mask = [0] * len(s.completion_ids)
        items.append(TrainItem(s.prompt_ids, s.completion_ids, 0.0, loss_mask=mask, group=uid,
                               behaviour_logprobs=list(s.logprobs), version=s.version,
                               images=tuple(questions[g.qid].images)))
    for it, v in zip(items, adv):
        it.advantage = v
    return items
