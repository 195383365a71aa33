"""One command that builds the toy world from scratch: questions, tokenizer, pretrained student and teacher.

    python -m zppo_ray.worlds.toy.bootstrap [config.yaml] [overrides...] [--force] [--ship]

Artefacts land in `toy.cache_dir/<world key>/`: the tokenizer and `world.json` there, and one directory
per model, `student-<key>/` and `teacher-<key>/`, each keyed on its own `toy.student`/`toy.teacher`
section. A changed config rebuilds only what it changes (tuning the student never retrains the
teacher), and an unchanged one is reused by every later run and test. Each directory is written under
a temporary name and renamed when complete: an interrupted bootstrap never leaves a half-built cache
that looks finished. A run (`ensure_toy_world`) first takes any missing part the package ships under the
same key (shipped.py): a fresh clone trains in minutes instead of pretraining for 20."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerFast

from zppo_ray.algo.reformulate import Templates
from zppo_ray.data.schema import Question
from zppo_ray.worlds.cache import building, locked
from zppo_ray.worlds.supervised import by_tier, encode_pair, greedy_grades, train_on_completions
from zppo_ray.worlds.toy import corpus, shipped
from zppo_ray.worlds.toy.models import Arch, build_model
from zppo_ray.worlds.toy.tokenizer import build_tokenizer
from zppo_ray.worlds.toy.world import OPS, ToySpec, generate_split

log = logging.getLogger(__name__)

# Bump when the generator, document formats or training recipe change in a way the config can't see: the
# world's version rebuilds everything, a role's version only that model (tuning the teacher's corpus never
# retrains the student). 3: the paper's prompt strings (templates.*), <summary> compression replies.
WORLD_FORMAT = 3
MODEL_FORMAT = {"student": 3, "teacher": 4}  # teacher 4: more compression documents
PRETRAIN_THREADS = 2  # see _train_role


@dataclass(frozen=True)
class ToyArtifacts:
    """Where the toy world lives: one tokenizer per world, one directory per model configuration."""

    root: Path
    student: Path
    teacher: Path

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"

    @property
    def report(self) -> dict:
        models = {role: json.loads((self.model(role) / "report.json").read_text())
                  for role in ("student", "teacher")}
        return {"world": json.loads((self.root / "world.json").read_text()), "models": models}

    def model(self, role: str) -> Path:
        if role not in ("student", "teacher"):
            raise ValueError(f"toy model role must be 'student' or 'teacher', got {role!r}")
        return self.student if role == "student" else self.teacher


def toy_spec(toy_cfg) -> ToySpec:
    return ToySpec(tiers=tuple(int(t) for t in toy_cfg.tiers), mc_fraction=float(toy_cfg.mc_fraction))


def toy_questions(toy_cfg, split: str) -> list[Question]:
    """The RL splits: "eval" (held out) and "train"; the training split never contains an eval question."""
    spec = toy_spec(toy_cfg)
    held_out = generate_split(spec, toy_cfg.n_eval, toy_cfg.seed, "eval")
    if split == "eval":
        qs = held_out
    elif split == "train":
        qs = generate_split(spec, toy_cfg.n_train, toy_cfg.seed, "train", exclude={q.extra["expr"] for q in held_out})
    else:
        raise ValueError(f"toy split must be 'train' or 'eval', got {split!r}")
    missing = gap_of(toy_cfg)
    if missing:  # a world with a skill gap: results break down by whether a question needs the missing skill
        for q in qs:
            q.extra["skill_group"] = "missing" if missing(q) else "known"
    return qs


def _plain(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else asdict(cfg)


def _digest(blob: dict) -> str:
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:12]


def world_key(toy_cfg, templates: Templates | None = None) -> str:
    """Hash of what shapes the questions, the tokenizer and every pretraining document (the prompt templates
    included: the models learn to read the strings the run will show them), not the models' own sections."""
    blob = {k: v for k, v in _plain(toy_cfg).items() if k not in ("cache_dir", "student", "teacher", "n_train")}
    return _digest({**blob, "templates": asdict(templates or Templates()), "format_version": WORLD_FORMAT})


def model_key(role: str, model_cfg) -> str:
    blob = _plain(model_cfg)
    if not blob.get("held_out"):  # added later: an empty list must key the models built before it existed
        blob.pop("held_out", None)
    return f"{role}-{_digest({**blob, 'format_version': MODEL_FORMAT[role]})}"


def held_out_of(model_cfg) -> set[str]:
    """The steps a model's corpus leaves out (ToyModelConfig.held_out), checked against what a step can be."""
    steps = {str(s) for s in getattr(model_cfg, "held_out", ()) or ()}
    bad = sorted(s for s in steps if len(s) != 2 or s[0] not in OPS or not s[1].isdigit())
    if bad:
        raise ValueError(f"held_out steps are an operator of {OPS!r} and a digit, like '*7'; got {bad}")
    return steps


def needs(q: Question, steps: set[str]) -> bool:
    """Whether the question's chain has one of these steps (its `skills` tag, world.make_question)."""
    return bool(steps & set(q.extra.get("skills", ())))


def unseen_tiers(toy_cfg, role: str = "student") -> set[str]:
    """The tiers ("1", "2", ...) a model's corpus gives no weight (`tier_weights`)."""
    tiers = [str(i) for i in range(1, len(toy_cfg.tiers) + 1)]
    return {t for t, w in _tier_weights(getattr(toy_cfg, role), tiers).items() if w == 0}


def gap_of(toy_cfg, role: str = "student") -> Callable[[Question], bool] | None:
    """Which questions need something a model's corpus never showed it: a held-out step (`held_out`, the
    missing facts of configs/zone.yaml) or a tier it gives no weight (`tier_weights`, the chains longer than
    any it read in configs/zone_depth.yaml). None: the model has no gap (the default world)."""
    held, unseen = held_out_of(getattr(toy_cfg, role)), unseen_tiers(toy_cfg, role)
    if not held and not unseen:
        return None
    return lambda q: q.tier in unseen or needs(q, held)


def artifacts_for(toy_cfg, templates: Templates | None = None) -> ToyArtifacts:
    root = Path(os.path.expanduser(str(toy_cfg.cache_dir))) / world_key(toy_cfg, templates)
    return ToyArtifacts(root, root / model_key("student", toy_cfg.student),
                        root / model_key("teacher", toy_cfg.teacher))


def _arch(m) -> Arch:
    return Arch(m.hidden_size, m.num_layers, m.num_heads, m.num_kv_heads, m.intermediate_size)


def _tier_weights(m, tiers: list[str]) -> dict[str, float]:
    weights = [float(w) for w in m.tier_weights]
    if len(weights) != len(tiers):
        raise ValueError(f"tier_weights has {len(weights)} entries for {len(tiers)} tiers")
    return dict(zip(tiers, weights))


def _pool(toy_cfg, held_out: list[Question]) -> list[Question]:
    return generate_split(toy_spec(toy_cfg), toy_cfg.pretrain_pool_per_tier, toy_cfg.seed, "pretrain",
                          exclude={q.extra["expr"] for q in held_out})


def tokenizer_corpus(toy_cfg, pool: list[Question], t: Templates) -> list[str]:
    """The texts the world's tokenizer is trained on. Fixed uniform tier weights: the tokenizer (and with it
    every cached model) does not change when one model's pretraining mix does."""
    uniform = {tier: 1.0 for tier in sorted({q.tier for q in pool})}
    docs = [d for role in ("student", "teacher")
            for d in corpus.documents(pool, uniform, 3000, toy_cfg.seed, role, t, mix=corpus.TOKENIZER_MIXES[role])]
    return [p + "\n" + c for p, c in docs] + ["user assistant system"] * 100


def _ensure_tokenizer(toy_cfg, art: ToyArtifacts, pool: list[Question], t: Templates) -> PreTrainedTokenizerFast:
    if not (art.root / "world.json").exists():
        tok = build_tokenizer(tokenizer_corpus(toy_cfg, pool, t), vocab_size=toy_cfg.vocab_size)
        art.root.mkdir(parents=True, exist_ok=True)
        with building(art.tokenizer) as tmp:
            tok.save_pretrained(tmp)
        world = {"world_key": art.root.name, "tiers_operands": list(toy_spec(toy_cfg).tiers),
                 "mc_fraction": toy_cfg.mc_fraction, "n_eval_per_tier": toy_cfg.n_eval}
        (art.root / "world.json").write_text(json.dumps(world, indent=2))
    return PreTrainedTokenizerFast.from_pretrained(art.tokenizer)


def role_documents(toy_cfg, role: str, pool: list[Question], t: Templates) -> list[tuple[str, str]]:
    """A model's pretraining documents (prompt, completion): the pool less the questions that need a step it
    holds out, drawn with its tier weights (and, for the student, its shortcut habit)."""
    mcfg = getattr(toy_cfg, role)
    held = held_out_of(mcfg)
    if held:
        kept = [q for q in pool if not needs(q, held)]
        log.info("toy %s: %d of %d pretraining questions need a held-out step %s and are left out", role,
                 len(pool) - len(kept), len(pool), sorted(held))
        pool = kept
    tiers = sorted({q.tier for q in pool})
    shortcut = dict(zip(tiers, (float(x) for x in mcfg.shortcut))) if role == "student" else None
    return corpus.documents(pool, _tier_weights(mcfg, tiers), mcfg.pretrain_docs, toy_cfg.seed, role, t,
                            shortcut=shortcut)


def initial_model(toy_cfg, role: str, tok):
    """A model's weights before pretraining (seeded: the same on every machine)."""
    mcfg = getattr(toy_cfg, role)
    return build_model(_arch(mcfg), tok, mcfg.max_position_embeddings, toy_cfg.seed)


def pretrain(toy_cfg, role: str, model, tok, encoded: list[tuple[list[int], int]],
             stop_after: int | None = None) -> list[float]:
    """Pretrain `model` on its encoded documents; `stop_after`: only the first steps of the same schedule."""
    mcfg = getattr(toy_cfg, role)
    # A fixed thread count: CPU matmuls sum in an order that depends on it, and these tiny models can
    # amplify last-bit differences over 1,500 steps into different models. Pinning removes that source of
    # machine-to-machine difference (the default student was built, twice, with 2 threads).
    threads = torch.get_num_threads()
    torch.set_num_threads(PRETRAIN_THREADS)
    try:
        return train_on_completions(model, encoded, mcfg.pretrain_steps, mcfg.pretrain_batch_size, mcfg.pretrain_lr,
                                    toy_cfg.seed, tok.pad_token_id, role, stop_after=stop_after)
    finally:
        torch.set_num_threads(threads)


def by_skill(questions: list[Question], grades: list[float], gap: Callable[[Question], bool]) -> dict:
    """Held-out accuracy by tier, split by whether a question needs what the model never saw (gap_of)."""
    out = {}
    for name, want in (("needs_held_out", True), ("other", False)):
        pairs = [(q, g) for q, g in zip(questions, grades) if bool(gap(q)) == want]
        out[name] = by_tier([q for q, _ in pairs], [g for _, g in pairs])
    return out


def _train_role(toy_cfg, role: str, tok, pool: list[Question], held_out: list[Question], final: Path,
                t: Templates) -> None:
    t0 = time.time()
    docs = role_documents(toy_cfg, role, pool, t)
    model = initial_model(toy_cfg, role, tok)
    encoded = [encode_pair(tok, p, c) for p, c in docs]
    losses = pretrain(toy_cfg, role, model, tok, encoded)
    train_s = time.time() - t0
    grades = greedy_grades(model, tok, held_out, max_new_tokens=96, templates=t)
    acc = by_tier(held_out, grades)
    gap = gap_of(toy_cfg, role)
    skills = by_skill(held_out, grades, gap) if gap else {}
    report = {
        "params": sum(p.numel() for p in model.parameters()),
        "pretrain_seconds": round(train_s, 1),
        "final_loss": round(sum(losses[-20:]) / max(1, len(losses[-20:])), 4),
        "heldout_greedy_accuracy_by_tier": acc,
        **({"heldout_greedy_accuracy_by_skill": skills} if skills else {}),
    }
    with building(final) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "report.json").write_text(json.dumps(report, indent=2))
    log.info("toy %s: %s params, %.0fs, held-out greedy accuracy by tier %s", role, report["params"],
             train_s, acc)


def ensure_toy_world(toy_cfg, templates: Templates | None = None, force: bool = False,
                     use_shipped: bool = True) -> ToyArtifacts:
    """Reuse, install or build the tokenizer and both pretrained models; returns where they are.

    `templates`: the run's prompt strings (None: the defaults), which every pretraining document is
    written with. A missing part that the package ships under the same key (zppo_ray/worlds/toy/shipped.py)
    is copied after a checksum check; `use_shipped=False` or `force` builds from scratch instead.
    Concurrent callers (parallel tests, two runs started together) take a file lock, so one builds and
    the others wait and then reuse its result instead of training the same models twice.
    """
    templates = templates or Templates()
    art = artifacts_for(toy_cfg, templates)
    if _complete(art) and not force:
        return art
    log.info("toy world incomplete: installing or building it, or waiting for whoever holds %s", art.root / ".lock")
    with locked(art.root):
        if use_shipped and not force:
            shipped.install(art.root, _missing_parts(art))
        return _build(toy_cfg, art, force, templates)


def _missing_parts(art: ToyArtifacts) -> list[str]:
    world = [] if (art.root / "world.json").exists() else [shipped.WORLD_PART]
    return world + [art.model(r).name for r in ("student", "teacher") if not (art.model(r) / "report.json").exists()]


def _complete(art: ToyArtifacts) -> bool:
    return not _missing_parts(art)


def _build(toy_cfg, art: ToyArtifacts, force: bool, t: Templates) -> ToyArtifacts:
    if force:  # from scratch: the tokenizer too
        (art.root / "world.json").unlink(missing_ok=True)
    todo = [r for r in ("student", "teacher") if force or not (art.model(r) / "report.json").exists()]
    if not todo and (art.root / "world.json").exists():
        return art
    held_out = toy_questions(toy_cfg, "eval")
    pool = _pool(toy_cfg, held_out)
    tok = _ensure_tokenizer(toy_cfg, art, pool, t)
    for role in todo:
        _train_role(toy_cfg, role, tok, pool, held_out, art.model(role), t)
    return art


def format_report(report: dict) -> str:
    tiers = report["world"]["tiers_operands"]
    lines = ["toy world held-out greedy accuracy by tier (operands per question: "
             + ", ".join(f"tier {i + 1} = {n}" for i, n in enumerate(tiers)) + ")"]
    for role, r in report["models"].items():
        acc = r["heldout_greedy_accuracy_by_tier"]
        cells = "  ".join(f"tier {t}: {acc[t]:.0%}" for t in sorted(acc))
        lines.append(f"  {role:<8} {r['params']:>9,} params  {cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """`bootstrap [config.yaml] [overrides] [--force] [--ship]`: without --force, reuse a cached world or
    build what is missing from scratch (never from the shipped copy); --force rebuilds everything; --ship
    then refreshes the package's shipped copy (zppo_ray/worlds/toy/shipped/) with new checksums."""
    from zppo_ray.config import load_config, split_cli_args

    flags = {a for a in argv if a in ("--force", "--ship")}
    path, overrides = split_cli_args(a for a in argv if a not in flags)
    cfg = load_config(path, overrides)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    art = ensure_toy_world(cfg.toy, cfg.templates, force="--force" in flags, use_shipped=False)
    print(f"toy world at {art.root}")
    print(format_report(art.report))
    if "--ship" in flags:
        print(f"shipped copy written to {shipped.ship(art.root, [art.student.name, art.teacher.name])}")


if __name__ == "__main__":
    import sys

    from zppo_ray.cli import run_entry

    sys.exit(run_entry(main, log_format="%(asctime)s %(name)s %(message)s"))
