"""`python -m zppo_ray.plot`: the pictures of a run, on a small real run committed in tests/data/runs/."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from zppo_ray.errors import RunDirError
from zppo_ray.eval.compare import read_run
from zppo_ray.plot import plot

RUN = Path(__file__).parent / "data" / "runs" / "zppo_small"
FIGURES = {"heldout_accuracy", "plain_reward", "hard_questions", "buffer", "graduation_by_entry_bin",
           "visits_before_leaving", "learning_signal", "step_time"}


def _png(path: Path) -> tuple:
    import matplotlib.image

    return matplotlib.image.imread(path).shape


def test_the_committed_run_is_a_resumed_zppo_run_with_every_kind_of_record():
    run = read_run(RUN)
    assert [s["step"] for s in run["steps"]] == list(range(1, len(run["steps"]) + 1))
    assert run["fates"] and {e["label"] for e in run["evals"]} >= {"before", "after"}
    assert sum(s["admitted"] for s in run["steps"]) and sum(s["n_bcq"] for s in run["steps"])
    log_lines = (RUN / "metrics.jsonl").read_text().splitlines()
    assert sum(json.loads(x)["kind"] == "summary" for x in log_lines) == 2  # stopped once, then resumed


def test_the_command_writes_every_figure(tmp_path):
    out = subprocess.run([sys.executable, "-m", "zppo_ray.plot", str(RUN), "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    written = {Path(line).stem for line in out.stdout.split()}
    assert written == FIGURES
    for name in FIGURES:
        h, w, _ = _png(tmp_path / f"{name}.png")
        assert h > 300 and w > 600


def test_a_stopped_run_without_summary_and_with_a_torn_last_line(tmp_path):
    run = tmp_path / "stopped"
    shutil.copytree(RUN, run)
    (run / "summary.json").unlink()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    cut = next(i for i, x in enumerate(lines) if json.loads(x).get("step") == 4 and json.loads(x)["kind"] == "step")
    (run / "metrics.jsonl").write_text("\n".join(lines[:cut]) + "\n" + lines[cut][:40])
    files = plot([run])
    assert files[0].parent == run / "plots" and {f.stem for f in files} == FIGURES
    assert [s["step"] for s in read_run(run)["steps"]] == [1, 2, 3]


def test_several_runs_are_drawn_side_by_side(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zppo_ray.plot import _accuracy

    other = tmp_path / "grpo_small"
    shutil.copytree(RUN, other)
    files = plot([RUN, other], tmp_path / "cmp")
    assert {f.stem for f in files} == FIGURES
    fig = _accuracy(plt, {"zppo_small": read_run(RUN), "grpo_small": read_run(other)}, single=False)
    assert [line.get_label() for line in fig.axes[0].lines] == ["zppo_small", "grpo_small"]


def test_a_world_with_a_skill_gap_gets_a_missing_skill_panel(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zppo_ray.plot import _accuracy

    run = tmp_path / "zone"
    shutil.copytree(RUN, run)
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        if r["kind"] == "eval":
            r["accuracy"].update({"skill:missing": 0.1, "skill:known": 0.9})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    one = _accuracy(plt, {"zone": read_run(run)}, single=True)
    assert [ln.get_label() for ln in one.axes[1].lines] == ["known skill", "missing skill"]
    assert all(y == 10.0 for y in one.axes[1].lines[1].get_ydata())
    two = _accuracy(plt, {"zone": read_run(run), "plain": read_run(RUN)}, single=False)
    assert [ln.get_label() for ln in two.axes[1].lines] == ["zone"]  # the run without skill groups has none
    plt.close("all")


def test_not_a_run_directory_is_a_clear_error(tmp_path):
    out = subprocess.run([sys.executable, "-m", "zppo_ray.plot", str(tmp_path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 2 and "has no metrics.jsonl" in out.stderr
    before = '{"kind": "eval", "step": 0, "label": "before", "accuracy": {"all": 0.5}}\n'
    (tmp_path / "metrics.jsonl").write_text(before)
    with pytest.raises(RunDirError, match="no training steps logged yet"):
        plot([tmp_path])


def test_the_end_of_a_run_writes_plots_and_survives_a_failure(tmp_path, caplog):
    from zppo_ray.main import write_plots

    run = tmp_path / "run"
    shutil.copytree(RUN, run)
    write_plots(run)
    assert {p.stem for p in (run / "plots").glob("*.png")} == FIGURES
    write_plots(tmp_path / "missing")  # reported, not raised: the run itself succeeded
    assert "retry with `python -m zppo_ray.plot" in caplog.text


def test_more_runs_than_default_colours_still_get_one_colour_each(tmp_path, monkeypatch):
    import matplotlib

    from zppo_ray import plot as plot_mod

    dirs = []
    for i in range(12):
        shutil.copytree(RUN, tmp_path / f"run{i}", ignore=shutil.ignore_patterns("plots"))
        dirs.append(tmp_path / f"run{i}")
    drawn = []
    real = plot_mod._accuracy
    monkeypatch.setattr(plot_mod, "_accuracy", lambda *a: drawn.append(real(*a)) or drawn[-1])
    plot(dirs, tmp_path / "cmp")
    colours = {matplotlib.colors.to_rgb(ln.get_color()) for ln in drawn[0].axes[0].lines}
    assert len(drawn[0].axes[0].lines) == 12 and len(colours) == 12
