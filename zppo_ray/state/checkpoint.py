"""Save and resume everything a run needs, not only weights.

A checkpoint is a directory `run_dir/checkpoints/step-000010/` holding:

    learner/        DeepSpeed state of every rank (model, optimizer, scheduler)
    buffer/         the replay buffer (contents, fate records) and its sampling RNG
    trainer.json    step, policy version, data cursor, controller RNG state
    ledger.json     where every question is (zppo_ray/state/ledger.py)
    COMPLETE        written last: a directory without it is an interrupted save and is ignored

The data cursor and the buffer are what every system this one learns from forgot at some point
(stack.md, lesson 6): without them a resumed run silently re-trains on questions it has seen and
replays a different set of hard questions.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

MARKER = "COMPLETE"


def rng_to_json(rng: random.Random) -> list:
    """random.Random state as JSON-friendly lists (the state is a tuple holding a tuple)."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def rng_from_json(rng: random.Random, state: list) -> None:
    version, internal, gauss = state
    rng.setstate((version, tuple(internal), gauss))


@dataclass
class TrainerState:
    step: int  # steps completed
    version: int  # policy version the rollout workers hold
    cursor: int  # questions consumed from the training order
    epoch: int  # passes over the training set completed
    rng_state: list  # controller RNG (random.Random.getstate, JSON-friendly)

    def restore_rng(self, rng: random.Random) -> None:
        rng_from_json(rng, self.rng_state)


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def write_trainer_state(directory: Path, state: TrainerState) -> None:
    tmp = directory / "trainer.json.tmp"
    tmp.write_text(json.dumps(asdict(state)))
    os.replace(tmp, directory / "trainer.json")


def mark_complete(directory: Path) -> None:
    (directory / MARKER).write_text("ok\n")


def unmark_complete(directory: Path) -> None:
    """Before a directory is written again: until the new save completes it is not a checkpoint."""
    (directory / MARKER).unlink(missing_ok=True)


def read_trainer_state(directory: Path) -> TrainerState:
    return TrainerState(**json.loads((directory / "trainer.json").read_text()))


def read_ledger(directory: Path) -> dict[str, str]:
    """The question ledger of a checkpoint ({} for checkpoints written before the ledger existed)."""
    path = directory / "ledger.json"
    return json.loads(path.read_text()) if path.exists() else {}


def latest(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = sorted(d for d in root.iterdir() if d.is_dir() and (d / MARKER).exists())
    return done[-1] if done else None


def resolve_resume(resume: str, run_dir: str | os.PathLike) -> Path | None:
    """`never` -> None; `auto` -> the latest complete checkpoint, if any; else a checkpoint path."""
    if resume == "never":
        return None
    if resume == "auto":
        return latest(run_dir)
    path = Path(resume)
    if not (path / MARKER).exists():
        from zppo_ray.errors import CheckpointError

        raise CheckpointError(f"trainer.resume={resume!r} is not a complete checkpoint (no {MARKER} file in it)")
    return path


def prune(run_dir: str | os.PathLike, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` complete checkpoints (0 keeps everything)."""
    if keep_last <= 0:
        return []
    root = Path(run_dir) / "checkpoints"
    done = sorted(d for d in root.iterdir() if d.is_dir() and (d / MARKER).exists())
    gone = done[:-keep_last]
    for d in gone:
        shutil.rmtree(d, ignore_errors=True)
    return gone
