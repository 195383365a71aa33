"""Entry point: `python -m zppo_ray.main [config.yaml] [dotted.overrides=...] [--debug]`.

Loads and validates the whole configuration, then checks everything the run will need (zppo_ray/preflight.py)
before anything expensive starts. Only then does it create the run directory and save the resolved config
there, make sure the world's models exist when the config refers to one (zppo_ray/worlds/), and train
(`zppo_ray.launch.train`). Under `ray job submit` it joins the cluster in RAY_ADDRESS; otherwise it starts a
local one. A run that stops before training began leaves no run directory behind (`RunDirectory`); how each
failure ends (one line, an exit status) is zppo_ray/cli.py's.
"""

from __future__ import annotations

import logging
import shutil
import sys
import time
from pathlib import Path

log = logging.getLogger("zppo_ray")


def run(argv: list[str]) -> Path:
    from zppo_ray import preflight, worlds
    from zppo_ray.config import load_config, save_resolved, split_cli_args

    path, overrides = split_cli_args(argv)
    cfg = load_config(path, overrides, check_paths=True)
    world = worlds.for_config(cfg)
    preflight.check_run(cfg, world)
    run_dir = Path(cfg.trainer.run_dir).expanduser()
    with RunDirectory(run_dir) as rd:
        save_resolved(cfg, run_dir)
        log.info("run directory %s (resolved config saved as config.yaml)", run_dir)
        t_world = time.perf_counter()
        if world is not None:  # a generated world: install, build or reuse its models, say what they can do
            world.ensure()
            if worlds.is_world_alias(cfg.student.path):
                preflight.check_disk(cfg, world.model_path("student"))
            report = world.report()
            print(report, flush=True)
            (run_dir / f"{world.name}_report.txt").write_text(report + "\n")
        if cfg.trainer.steps > 0:
            from zppo_ray.launch import train

            world_s = time.perf_counter() - t_world
            summary = train(cfg, run_dir, world, on_start=rd.keep)
            print(f"run directory: {run_dir}  (config.yaml, metrics.jsonl, final/, buffer/, summary.json)")
            if cfg.metrics.plots and cfg.metrics.jsonl:
                write_plots(run_dir)
            elif cfg.metrics.plots:
                log.warning("no plots: they are drawn from metrics.jsonl, and metrics.jsonl=false")
            print(phase_line({"world": world_s, **summary.get("phase_seconds", {})}), flush=True)
            if summary.get("eval_before") and summary.get("eval_after"):
                b, a = summary["eval_before"]["all"], summary["eval_after"]["all"]
                print(f"held-out accuracy: {b:.1%} before -> {a:.1%} after {summary['steps']} steps", flush=True)
        rd.keep()
    return run_dir


class RunDirectory:
    """Creates the run directory and removes it again if the command stops before the run began (a failure
    or Ctrl-C while the world builds, the data loads, Ray or the roles start): a directory holding only a
    config of a run that never happened misleads whoever lists `runs/` later. Once `keep()` is called (the
    roles are up) the directory stays, whatever happens; a directory that existed before is never removed."""

    def __init__(self, path: Path):
        self.path = path
        self.kept = path.exists()  # a directory that was there before is the user's
        # the outermost folder this run creates (`runs/` on a first run): removed with it, if nothing else is there
        self.top = next((p for p in reversed([path, *path.parents]) if not p.exists()), path)

    def __enter__(self) -> "RunDirectory":
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    def keep(self) -> None:
        self.kept = True

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is not None and not self.kept:
            shutil.rmtree(self.path, ignore_errors=True)
            for parent in self.path.parents:  # the folders created for it, innermost first, while empty
                if not parent.is_relative_to(self.top) or any(parent.iterdir()):
                    break
                parent.rmdir()
            log.info("removed the run directory %s: the run stopped before it began", self.path)
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):  # Ctrl-C, or SIGTERM (cli.Terminated)
            from zppo_ray.cli import EXIT_INTERRUPTED, EXIT_PREEMPTED, Terminated
            from zppo_ray.errors import Interrupted

            status = EXIT_PREEMPTED if issubclass(exc_type, Terminated) else EXIT_INTERRUPTED
            raise Interrupted(self._interrupted(), status) from exc  # where it landed: shown with --debug only
        return False

    def _interrupted(self) -> str:
        from zppo_ray.state import checkpoint as ckpt

        if not self.kept:
            return f"the run stopped before training began; nothing was kept ({self.path} removed)"
        last = ckpt.latest(self.path)
        if last is None:
            return (f"no checkpoint was written yet; the logs so far are in {self.path}; a new run starts from "
                    "the beginning")
        return (f"the last checkpoint is {last}; continue with trainer.run_dir={self.path} trainer.resume=auto")


def phase_line(phases: dict[str, float]) -> str:
    """Where the command's time went, so that a user can tell a slow machine from a slow phase."""
    return "time by phase: " + ", ".join(f"{k.replace('_', ' ')} {v:.0f} s" for k, v in phases.items())


def write_plots(run_dir: Path) -> None:
    """The run's PNGs (zppo_ray/plot.py). A plotting failure is reported, never turned into a failed run:
    the model and the logs are already written, and `python -m zppo_ray.plot` can redo it."""
    from zppo_ray.plot import plot

    try:
        files = plot([run_dir])
    except Exception:  # noqa: BLE001 - see the docstring
        log.exception("writing the plots of %s failed; retry with `python -m zppo_ray.plot %s`", run_dir, run_dir)
        return
    print(f"plots: {len(files)} PNGs in {files[0].parent}" if files else "plots: nothing to plot", flush=True)


def cli() -> None:
    from zppo_ray.cli import run_entry

    sys.exit(run_entry(run))


if __name__ == "__main__":
    cli()
