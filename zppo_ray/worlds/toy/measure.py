"""Measure a toy world before training anything on it: does it have a zone of proximal development?

    python -m zppo_ray.worlds.toy.measure [config.yaml] [overrides...] [--questions N] [--out FILE.json]

With the run's own sampling (student: rollout temperature and G_S samples; teacher: its temperature and G_T
samples), on N training questions:
- the student's plain accuracy per question, and the entry-bin distribution of its hard questions
  (accuracy < tau): how many it fails on every rollout (0/G_S), which GRPO cannot learn from;
- the teacher's pass@G_T on those 0/G_S questions (can BCQ get a positive candidate?);
- the student's accuracy on the BCQ and NCQ prompts built for them (one teacher-correct and one student-wrong
  candidate; the student's wrong answers), and the share of questions where it lies strictly between 0 and 1
  (a group with signal);
- a copy guard: the same BCQ prompts with the candidates' final answers cut off;
all split by skill: whether a question needs what the student's corpus never showed (a held-out step,
`toy.student.held_out`, or a tier of weight 0, `toy.student.tier_weights`).
Candidates are shown raw (compression off): this measures the world, not the teacher's compression.
Transformers sampling on CPU, no Ray and no engines; a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
from collections import Counter
from pathlib import Path

from zppo_ray.algo.reformulate import Templates, build_bcq, build_ncq, question_prompt
from zppo_ray.rewards import grade, last_boxed

log = logging.getLogger(__name__)


def _without_answer(candidate: str) -> str:
    """A candidate with its final answer cut: the boxed line goes, and the last step's result digit."""
    work = candidate.split("</think>")[0]
    return re.sub(r"=\d$", "=", work.rstrip()) + "</think>"


def _acc(texts: list[str], q) -> float:
    return sum(grade(t, q.answer, q.kind) for t in texts) / len(texts)


def measure(cfg, n_questions: int = 300, seed: int = 0) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from zppo_ray.worlds.toy.bootstrap import ensure_toy_world, gap_of, held_out_of, toy_questions, unseen_tiers
    from zppo_ray.worlds.toy.models import sample_complete

    t: Templates = cfg.templates
    art = ensure_toy_world(cfg.toy, t)
    rng = random.Random(seed)
    train = toy_questions(cfg.toy, "train")
    qs = rng.sample(train, min(n_questions, len(train)))
    held_out = held_out_of(cfg.toy.student)
    gap = gap_of(cfg.toy) or (lambda q: False)
    g_s, g_t, tau = cfg.rollout.group_size, cfg.teacher.group_size, cfg.algo.tau
    mx = cfg.rollout.max_new_tokens
    tok = AutoTokenizer.from_pretrained(art.student)
    student = AutoModelForCausalLM.from_pretrained(art.student).eval()
    teacher = AutoModelForCausalLM.from_pretrained(art.teacher).eval()

    plain = sample_complete(student, tok, [question_prompt(q.text, t) for q in qs], g_s, cfg.rollout.temperature,
                            mx, seed)
    acc = {q.id: _acc(outs, q) for q, outs in zip(qs, plain)}
    hard = [q for q in qs if acc[q.id] < tau]
    zero = [q for q in hard if acc[q.id] == 0]
    bins = Counter(f"{round(acc[q.id] * g_s)}/{g_s}" for q in hard)
    samples = {q.id: outs for q, outs in zip(qs, plain)}

    t_outs = sample_complete(teacher, tok, [question_prompt(q.text, t) for q in zero], g_t, cfg.teacher.temperature,
                             cfg.teacher.max_new_tokens, seed + 1) if zero else []
    solved = {q.id: next((o for o in outs if grade(o, q.answer, q.kind)), None) for q, outs in zip(zero, t_outs)}
    bcq_qs = [q for q in zero if solved[q.id]]
    bcq, guard = [], []
    for q in bcq_qs:
        wrong = samples[q.id][0]  # every sample of a 0/G_S question is wrong
        bcq.append(build_bcq(q.text, solved[q.id], wrong, rng, t)[0])
        guard.append(build_bcq(q.text, _without_answer(solved[q.id]), _without_answer(wrong), rng, t)[0])
    ncq = []
    for q in zero:
        wrongs = list(dict.fromkeys(samples[q.id]))[:2]
        ncq.append(build_ncq(q.text, [last_boxed(w) for w in wrongs], wrongs, t))
    s_bcq = sample_complete(student, tok, bcq, g_s, cfg.rollout.temperature, mx, seed + 2) if bcq else []
    s_guard = sample_complete(student, tok, guard, g_s, cfg.rollout.temperature, mx, seed + 3) if guard else []
    s_ncq = sample_complete(student, tok, ncq, g_s, cfg.rollout.temperature, mx, seed + 4) if ncq else []

    def split(items: list, key) -> dict:
        out = {}
        for name, pick in (("all", lambda q: True), ("held_out_skill", gap), ("other", lambda q: not gap(q))):
            vals = [key(x) for x in items if pick(x[0])]
            out[name] = {"n": len(vals), "mean": round(sum(vals) / len(vals), 4) if vals else None}
        return out

    def group(pairs) -> dict:
        accs = [(q, _acc(o, q)) for q, o in pairs]
        return {**split(accs, lambda x: x[1]),
                "share_with_signal": round(sum(0 < a < 1 for _, a in accs) / len(accs), 4) if accs else None}

    return {
        "questions": len(qs), "tau": tau, "group_size": g_s, "held_out": sorted(held_out),
        "unseen_tiers": sorted(unseen_tiers(cfg.toy)),
        "plain_accuracy": split([(q, acc[q.id]) for q in qs], lambda x: x[1]),
        "hard": len(hard), "entry_bins": dict(sorted(bins.items(), key=lambda kv: int(kv[0].split("/")[0]))),
        "zero_share_of_hard": round(len(zero) / len(hard), 4) if hard else None,
        "zero_needing_held_out": sum(map(gap, zero)),
        "teacher_pass_at_g_t_on_zero": round(len(bcq_qs) / len(zero), 4) if zero else None,
        "bcq_student_accuracy": group(zip(bcq_qs, s_bcq)),
        "bcq_copy_guard_accuracy": group(zip(bcq_qs, s_guard)),
        "ncq_student_accuracy": group(zip(zero, s_ncq)),
    }


def main(argv: list[str] | None = None) -> None:
    from zppo_ray.config import load_config, split_cli_args

    ap = argparse.ArgumentParser(prog="python -m zppo_ray.worlds.toy.measure", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=300)
    ap.add_argument("--out", type=Path)
    args, rest = ap.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    path, overrides = split_cli_args(rest)
    report = measure(load_config(path, overrides), args.questions)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
