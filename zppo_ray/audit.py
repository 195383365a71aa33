"""`python -m zppo_ray.audit RUN_DIR`: check that a finished (or stopped) run lost no question.

Reads what the run left behind and cross-checks three independent records (zppo_ray/state/ledger.py):
the controller's question ledger (newest complete checkpoint), the replay buffer's own snapshot and fate
records (the checkpoint's `buffer/`), and the questions the data cursor must have served, replayed from the
run's resolved config. The run log (`metrics.jsonl`, "served" records) ties them together step by step.
Exit status 0 when every question is accounted for, 1 otherwise (the problems are printed); 2 when the run
directory cannot be audited (missing, no complete checkpoint: zppo_ray/cli.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

from zppo_ray.data.cursor import DataCursor
from zppo_ray.errors import CheckpointError, RunDirError
from zppo_ray.observe.runlog import read_records
from zppo_ray.state import checkpoint as ckpt
from zppo_ray.state.buffer import PromptReplayBuffer
from zppo_ray.state.ledger import Audit, audit


def served_log(run_dir: Path, up_to: int) -> dict[int, dict]:
    """step -> the last "served" record of that step (a rolled-back step was served again), steps <= up_to."""
    out: dict[int, dict] = {}
    for rec in read_records(run_dir / "metrics.jsonl"):
        if rec.get("kind") == "served" and rec["step"] <= up_to:
            out[rec["step"]] = rec
    return out


def audit_run(run_dir: str | Path) -> Audit:
    from transformers import AutoTokenizer

    from zppo_ray import worlds
    from zppo_ray.config import load_config
    from zppo_ray.launch import load_split, model_paths
    from zppo_ray.preflight import check_model_dir, check_tokenizer_dir

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: no such run directory (give a run's trainer.run_dir)")
    for name in ("config.yaml", "metrics.jsonl"):
        if not (run_dir / name).exists():
            raise RunDirError(f"{run_dir} has no {name}: the audit reads the resolved config and the run log "
                              "that `python -m zppo_ray.main` writes (metrics.jsonl=true)")
    d = ckpt.latest(run_dir)
    if d is None:
        raise CheckpointError(f"{run_dir} has no complete checkpoint to audit (a run that stopped before its "
                              "first checkpoint has nothing to account for)")
    cfg = load_config(str(run_dir / "config.yaml"), [])
    world = worlds.for_config(cfg)
    student, _ = model_paths(cfg, world)
    if cfg.student.tokenizer:
        check_tokenizer_dir(cfg.student.tokenizer, "student.tokenizer")
    elif world is None:
        check_model_dir(student, "student.path")
    questions = load_split(cfg, "train", AutoTokenizer.from_pretrained(cfg.student.tokenizer or student), world)
    state = ckpt.read_trainer_state(d)
    cursor = DataCursor(questions, cfg.data.shuffle_seed)
    expected = [[q.id for q in cursor.next(cfg.trainer.prompts_per_step)] for _ in range(state.step)]
    buffer_ids, fates = [], []
    if (d / "buffer" / "buffer.json").exists():
        buf = PromptReplayBuffer.restore(d / "buffer" / "buffer.json")
        buffer_ids, fates = buf.ids(), [vars(f) for f in buf.fates]
    ledger = {q.id: "not_served" for q in questions} | ckpt.read_ledger(d)
    return audit(ledger, served_log(run_dir, state.step), expected, buffer_ids, fates)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m zppo_ray.audit RUN_DIR [--debug]", file=sys.stderr)
        return 2
    a = audit_run(argv[0])
    print("questions: " + ", ".join(f"{k} {v}" for k, v in a.counts.items()) + f" (total {sum(a.counts.values())})")
    for p in a.problems:
        print(f"PROBLEM: {p}")
    print("every question accounted for" if a.ok else f"{len(a.problems)} problem(s)")
    return 0 if a.ok else 1


if __name__ == "__main__":
    from zppo_ray.cli import run_entry

    sys.exit(run_entry(main))
