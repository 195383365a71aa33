"""Measure a world before training anything on it: does it have a zone of proximal development?

    python -m zppo_ray.worlds.measure [config.yaml] [overrides...] [--questions N] [--engine hf|vllm] [--out F]

With the run's own sampling (student: rollout temperature and G_S samples; teacher: its temperature and G_T
samples), on N training questions:
- the student's plain accuracy per question, and the entry-bin distribution of its hard questions
  (accuracy < tau): how many it fails on every rollout (0/G_S), which GRPO cannot learn from;
- the teacher's pass@G_T on those 0/G_S questions (can BCQ get a positive candidate?);
- the student's accuracy on the BCQ and NCQ prompts built for them (one teacher-correct and one student-wrong
  candidate; the student's wrong answers), and the share of questions where it lies strictly between 0 and 1
  (a group with signal);
- a copy guard: the same BCQ prompts with the candidates' final answers cut off;
all split by skill where the world has a gap (the toy world's `toy.student.held_out` steps or tiers of weight
0 in `toy.student.tier_weights`: what the student's corpus never showed).
Candidates are shown raw (compression off): this measures the world, not the teacher's compression.
No Ray. `--engine hf` (default): transformers sampling, a few minutes for the toy world on 2 cores;
`--engine vllm`: one vLLM engine per model in this process, for real models (the smollm2 world).
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
    """A candidate with its final answer cut: the boxed line goes, and the last step's result (the toy world's
    "...=7", the smollm2 world's "So 12 + 9 = 21.")."""
    work = candidate.split("</think>")[0]
    return re.sub(r"=\s*-?\d+\.?$", "=", work.rstrip()) + "</think>"


class _Sampler:
    """`n` sampled texts per chat prompt from the world's "student" or "teacher", by transformers or vLLM."""

    def __init__(self, world, engine: str, cfg):
        self.world, self.engine = world, engine
        self.model_cfg = {"student": cfg.student, "teacher": cfg.teacher.model}  # dtype, max_model_len
        self._models: dict = {}

    def __call__(self, role: str, prompts: list[str], n: int, temperature: float, max_tokens: int,
                 seed: int) -> list[list[str]]:
        if not prompts:
            return []
        path = self.world.model_path(role)
        if self.engine == "vllm":
            from zppo_ray.engine.vllm_engine import VLLMEngine
            from zppo_ray.types import GenRequest

            if role not in self._models:
                m = self.model_cfg[role]
                self._models[role] = VLLMEngine(path, dtype=m.dtype, max_model_len=m.max_model_len, kv_cache_gib=2.0,
                                                seed=seed)
            eng = self._models[role]
            outs = eng.generate([GenRequest(p, n) for p in prompts], temperature=temperature, max_tokens=max_tokens,
                                seed=seed, logprobs=False)
            return [[eng.tokenizer.decode(s.completion_ids, skip_special_tokens=True) for s in o] for o in outs]
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from zppo_ray.worlds.supervised import sample_complete

        if role not in self._models:
            self._models[role] = (AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path))
        model, tok = self._models[role]
        return sample_complete(model, tok, prompts, n, temperature, max_tokens, seed)


def _acc(texts: list[str], q) -> float:
    return sum(grade(t, q.answer, q.kind) for t in texts) / len(texts)


def measure(cfg, n_questions: int = 300, seed: int = 0, engine: str = "hf") -> dict:
    from zppo_ray.worlds import for_config

    t: Templates = cfg.templates
    world = for_config(cfg)
    if world is None:
        raise ValueError("measure needs a world (toy, smollm2): this config's models and data are files")
    world.ensure()
    sample = _Sampler(world, engine, cfg)
    rng = random.Random(seed)
    train = world.questions("train")
    qs = rng.sample(train, min(n_questions, len(train)))
    gap = world.gap() or (lambda q: False)
    g_s, g_t, tau = cfg.rollout.group_size, cfg.teacher.group_size, cfg.algo.tau
    mx = cfg.rollout.max_new_tokens

    plain = sample("student", [question_prompt(q.text, t) for q in qs], g_s, cfg.rollout.temperature, mx, seed)
    acc = {q.id: _acc(outs, q) for q, outs in zip(qs, plain)}
    hard = [q for q in qs if acc[q.id] < tau]
    zero = [q for q in hard if acc[q.id] == 0]
    bins = Counter(f"{round(acc[q.id] * g_s)}/{g_s}" for q in hard)
    samples = {q.id: outs for q, outs in zip(qs, plain)}

    t_outs = sample("teacher", [question_prompt(q.text, t) for q in zero], g_t, cfg.teacher.temperature,
                    cfg.teacher.max_new_tokens, seed + 1)
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
    s_bcq = sample("student", bcq, g_s, cfg.rollout.temperature, mx, seed + 2)
    s_guard = sample("student", guard, g_s, cfg.rollout.temperature, mx, seed + 3)
    s_ncq = sample("student", ncq, g_s, cfg.rollout.temperature, mx, seed + 4)

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
        "world": world.name, "engine": engine, "questions": len(qs), "tau": tau, "group_size": g_s,
        "plain_accuracy_by_tier": {tier: round(sum(acc[q.id] for q in qs if q.tier == tier)
                                               / sum(q.tier == tier for q in qs), 4)
                                   for tier in sorted({q.tier for q in qs})},
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

    ap = argparse.ArgumentParser(prog="python -m zppo_ray.worlds.measure", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=300)
    ap.add_argument("--engine", choices=("hf", "vllm"), default="hf")
    ap.add_argument("--out", type=Path)
    args, rest = ap.parse_known_args(argv)
    path, overrides = split_cli_args(rest)
    report = measure(load_config(path, overrides), args.questions, engine=args.engine)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    import sys

    from zppo_ray.cli import run_entry

    sys.exit(run_entry(main, log_format="%(asctime)s %(name)s %(message)s"))
