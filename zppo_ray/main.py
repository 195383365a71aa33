"""Entry point: `python -m zppo_ray.main [config.yaml] [dotted.overrides=...]`.

Loads and validates the whole configuration before anything starts, saves the resolved config into the
run directory, makes sure the toy world (tokenizer, pretrained student and teacher) exists when the
config refers to it (zppo_ray/worlds/), then trains (`zppo_ray.launch.train`). Under `ray job submit` it joins the cluster
in RAY_ADDRESS; otherwise it starts a local one.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("zppo_ray")

EXIT_INFRA = 3  # the run stopped on an infrastructure failure it could not recover from; resume=auto continues


def run(argv: list[str]) -> Path:
    from zppo_ray import worlds
    from zppo_ray.config import load_config, save_resolved, split_cli_args
    from zppo_ray.launch import train

    path, overrides = split_cli_args(argv)
    cfg = load_config(path, overrides, check_paths=True)
    run_dir = Path(cfg.trainer.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_resolved(cfg, run_dir)
    log.info("run directory %s (resolved config saved as config.yaml)", run_dir)
    world = worlds.for_config(cfg)
    t_world = time.perf_counter()
    if world is not None:  # a generated world: install, build or reuse its models, say what they can do
        world.ensure()
        report = world.report()
        print(report, flush=True)
        (run_dir / f"{world.name}_report.txt").write_text(report + "\n")
    if cfg.trainer.steps > 0:
        world_s = time.perf_counter() - t_world
        summary = train(cfg, run_dir, world)
        print(f"run directory: {run_dir}  (config.yaml, metrics.jsonl, final/, buffer/, summary.json)")
        if cfg.metrics.plots and cfg.metrics.jsonl:
            write_plots(run_dir)
        elif cfg.metrics.plots:
            log.warning("no plots: they are drawn from metrics.jsonl, and metrics.jsonl=false")
        print(phase_line({"world": world_s, **summary.get("phase_seconds", {})}), flush=True)
        if summary.get("eval_before") and summary.get("eval_after"):
            b, a = summary["eval_before"]["all"], summary["eval_after"]["all"]
            print(f"held-out accuracy: {b:.1%} before -> {a:.1%} after {summary['steps']} steps", flush=True)
    return run_dir


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
    logging.basicConfig(level=os.environ.get("ZPPO_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from zppo_ray.redact import install_log_redaction

    install_log_redaction()
    from zppo_ray.config import ConfigError
    from zppo_ray.errors import InfraError, SetupError
    from zppo_ray.launch import EXIT_PREEMPTED, Preempted

    try:
        run(sys.argv[1:])
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
    except SetupError as e:
        print(f"setup error: {e}", file=sys.stderr)
        sys.exit(2)
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        sys.exit(EXIT_PREEMPTED)
    except InfraError as e:  # a role that could not be kept alive (README "Recovery")
        print(f"run stopped: {e}", file=sys.stderr)
        sys.exit(EXIT_INFRA)


if __name__ == "__main__":
    cli()
