"""The smollm2 world's two models, both fine-tuned from SmolLM2-135M-Instruct (the converted package model) on
worked solutions of the task (task.py), built once and cached under smollm2.cache_dir.

Why fine-tune the student at all: the instruct model as shipped cannot do this task in the paper's format.
Sampled 8 times at temperature 1 with the paper's closer, it scored 0/8 on all 60 training sums measured
(tiers 1-3), and 0-4% even with a worked example in the prompt or a plainer closer (README "A real model").
A student at 0/8 everywhere has no zone: nothing to start from. So the student gets a short warm-up
(`smollm2.student.steps`, 0 = the model as shipped) on sums **without a carry** only: it learns the
format and column addition, and never sees a carry. Sums with a carry are its missing skill
(`extra["skill_group"]`: missing / known), as the toy zone world leaves out facts.

Why this teacher: ZPPO's teacher only writes text (solutions, verdicts), so it needs no shared vocabulary
with the student, only more skill on the task. No stronger packaged model was available offline (Gemma-3-270M
base is the only other one, under Gemma terms, untried); a longer fine-tune on all sums, carries included,
makes this model solve most of them. The student never sees those solutions except as BCQ candidates.

Neither corpus contains a held-out sum. Each build records its model's greedy accuracy on the held-out split
per tier and per skill group, graded by the project's grader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from zppo_ray.algo.reformulate import Templates, question_prompt
from zppo_ray.worlds.cache import building, locked
from zppo_ray.worlds.smollm2 import task
from zppo_ray.worlds.supervised import by_tier, encode_pair, greedy_grades, train_on_completions

log = logging.getLogger(__name__)

MAX_NEW_TOKENS = 128  # the longest worked solution (three digits, a carry in every column) is about 85 tokens
SECONDS_PER_EXAMPLE = 0.75  # fine-tuning cost on 2 cores in bf16 autocast (6 s a step of 8, measured)


def _key(role: str, cfg, base_dir: Path, templates: Templates) -> str:
    """Everything that shapes a model: the converted base, the task, its recipe, the prompt."""
    recipe = getattr(cfg, role)
    spec = {"role": role, "base": base_dir.name, "task": task.VERSION, "tiers": cfg.tiers, "seed": cfg.seed,
            "n_eval": cfg.n_eval, "recipe": asdict(recipe),
            "closer": templates.format_closer}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def ensure_model(role: str, cfg, base_dir: Path, templates: Templates) -> Path:
    """The fine-tuned "student" or "teacher" directory (with report.json); builds it when the cache lacks it.
    A student with warmup_steps 0 is the converted model itself."""
    recipe = getattr(cfg, role)
    if role == "student" and recipe.steps == 0:
        return base_dir
    final = Path(cfg.cache_dir).expanduser() / f"{role}-{_key(role, cfg, base_dir, templates)}"
    if (final / "report.json").exists():
        return final
    with locked(final.parent):
        if not (final / "report.json").exists():  # another process may have built it while we waited
            _build(role, cfg, base_dir, templates, final)
    return final


def _corpus(role: str, cfg, held_out: list) -> list:
    """The worked sums a role is fine-tuned on (the student's: no carry anywhere); each tier weighs the same."""
    recipe = getattr(cfg, role)
    exclude = frozenset(q.extra["sum"] for q in held_out)
    if role == "teacher":
        return _balanced(task.generate(recipe.examples_per_tier, cfg.tiers, cfg.seed, "sft", exclude),
                         recipe.examples_per_tier)
    pool = [q for q in task.generate(recipe.examples_per_tier, cfg.tiers, cfg.seed, "warmup", exclude)
            if not task.has_carry(q)]
    return _balanced(pool, recipe.examples_per_tier)


def _balanced(pool: list, per_tier: int) -> list:
    """Every tier `per_tier` times: a tier with fewer distinct sums (tier 1 has 54 outside the held-out split)
    is repeated, or the model would see it a few dozen times in thousands and lose the one-digit sums (the
    first teacher, with 31 of them among 4,031 examples: 64% greedy on tier 1, 90-100% on tiers 2-3)."""
    by_tier: dict[str, list] = {}
    for q in pool:
        by_tier.setdefault(q.tier, []).append(q)
    return [qs[i % len(qs)] for qs in by_tier.values() for i in range(per_tier)]


def _build(role: str, cfg, base_dir: Path, templates: Templates, final: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    held_out = task.splits(cfg.n_train, cfg.n_eval, cfg.tiers, cfg.seed, "eval")
    pool = _corpus(role, cfg, held_out)
    recipe = getattr(cfg, role)
    steps, batch_size = recipe.steps, recipe.batch_size
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    docs = [encode_pair(tok, question_prompt(q.text, templates), q.extra["solution"]) for q in pool]
    log.info("fine-tuning the smollm2 %s on %d worked sums%s: %d steps of %d (about %.0f min on 2 cores)", role,
             len(docs), " without a carry" if role == "student" else "", steps, batch_size,
             steps * batch_size * SECONDS_PER_EXAMPLE / 60)
    t0 = time.time()
    losses = train_on_completions(model, docs, steps, batch_size, recipe.lr, recipe.seed,
                                  tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                                  f"smollm2 {role}", bf16=True)
    train_s = time.time() - t0
    log.info("measuring the %s's greedy accuracy on %d held-out sums", role, len(held_out))
    grades = greedy_grades(model, tok, held_out, MAX_NEW_TOKENS, templates)
    report = {"base": str(base_dir), "examples": len(docs), "steps": steps, "finetune_seconds": round(train_s, 1),
              "final_loss": round(sum(losses[-10:]) / max(1, len(losses[-10:])), 4),
              "heldout_greedy_accuracy_by_tier": by_tier(held_out, grades),
              "heldout_greedy_accuracy_by_skill": skill_accuracy(held_out, grades),
              "seconds": round(time.time() - t0, 1)}
    with building(final) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
    log.info("smollm2 %s built in %.0f s: held-out greedy accuracy by tier %s, by skill %s", role,
             report["seconds"], report["heldout_greedy_accuracy_by_tier"], report["heldout_greedy_accuracy_by_skill"])


def skill_accuracy(questions: list, grades: list[float]) -> dict[str, float]:
    """Mean grade of the sums with and without a carry."""
    out = {}
    for name, want in (("carry", True), ("no_carry", False)):
        g = [x for q, x in zip(questions, grades) if task.has_carry(q) == want]
        if g:
            out[name] = round(sum(g) / len(g), 4)
    return out
