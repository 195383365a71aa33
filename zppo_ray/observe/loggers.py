"""The loggers researchers already use, fed from the same records as `metrics.jsonl` (observe/runlog.py):
TensorBoard event files in `run_dir/tensorboard/` (`metrics.tensorboard`) and a Weights & Biases run in
offline mode in `run_dir/wandb/` (`metrics.wandb`; `wandb sync` uploads it later). Both off by default.

Names are namespaced as verl and OpenRLHF do: `train/…` (rewards, group counts, learner statistics),
`buffer/…` (size, admissions, graduations, evictions, replay), `timing/…` (seconds per step phase) and
`eval/…` (held-out accuracy, overall and per tier), with the training step as the x axis.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

log = logging.getLogger(__name__)

# step-record keys that describe the replay buffer, and their names under buffer/
BUFFER_KEYS = {"buffer_size": "size", "admitted": "admitted", "graduated": "graduated", "evicted": "evicted",
               "n_replay": "replayed", "replay_reward": "replay_reward"}
SKIP = {"kind", "time", "step", "learn"}


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def namespaced(record: dict) -> tuple[int, dict[str, float]] | None:
    """(step, {namespaced name: value}) of a run-log record; None for records that are not time series
    (per-question fates, the summary, a preemption notice)."""
    if record.get("kind") == "eval":
        acc = record["accuracy"]
        return record["step"], {f"eval/accuracy/{'all' if t == 'all' else f'tier_{t}'}": float(v)
                                for t, v in acc.items()}
    if record.get("kind") != "step":
        return None
    out = {f"timing/{k}": float(v) for k, v in record["time"].items()}
    for k, v in record.get("learn", {}).items():  # the learner's reduced statistics
        name = {"seconds": "timing/learner_compute", "step": "train/optimizer_step"}.get(k, f"train/{k}")
        out[name] = float(v)
    for k, v in record.items():
        if k in SKIP or not _number(v):
            continue
        if k == "push_seconds":
            out["timing/push_weights"] = float(v)
        else:
            out[f"buffer/{BUFFER_KEYS[k]}" if k in BUFFER_KEYS else f"train/{k}"] = float(v)
    return record["step"], out


class TensorBoardSink:
    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = log_dir
        self.writer = SummaryWriter(str(log_dir))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()  # a killed run keeps what it logged, as metrics.jsonl does

    def close(self) -> None:
        self.writer.close()


class WandbSink:
    """An offline W&B run; its id is kept in run_dir so that a resumed run continues the same W&B run."""

    def __init__(self, run_dir: Path, project: str, config: dict):
        import wandb

        id_file = run_dir / "wandb_run_id"
        run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
        id_file.write_text(run_id + "\n")
        self.run = wandb.init(mode="offline", dir=str(run_dir), project=project, name=run_dir.name, id=run_id,
                              resume="allow", config=config)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(scalars, step=step)

    def close(self) -> None:
        import wandb

        self.run.finish()
        # finish() can return before W&B's service has written the last records (measured: 7 of 10 steps in
        # the file); teardown waits for the service to exit, so a process that ends next loses nothing.
        wandb.teardown()


def sinks_for(cfg, run_dir: Path) -> list:
    """The sinks `cfg.metrics` switches on (none by default)."""
    out: list = []
    if cfg.metrics.tensorboard:
        out.append(TensorBoardSink(run_dir / "tensorboard"))
    if cfg.metrics.wandb:
        import yaml

        from zppo_ray.config.load import to_yaml
        from zppo_ray.redact import redact_text

        config = yaml.safe_load(redact_text(to_yaml(cfg)))  # what config.yaml holds: no credential leaves
        out.append(WandbSink(run_dir, cfg.metrics.wandb_project, config))
    for s in out:
        log.info("logging to %s", type(s).__name__.removesuffix("Sink"))
    return out
