"""TensorBoard and W&B (offline) receive the run log's records under namespaced names, read back with each
tool's own reader; both are off by default."""

import json
import struct
from pathlib import Path

import pytest

from zppo_ray.observe.loggers import TensorBoardSink, namespaced, sinks_for
from zppo_ray.observe.runlog import RunLog

RUN = Path(__file__).parent / "data" / "runs" / "zppo_small"


def _records() -> list[dict]:
    return [json.loads(x) for x in (RUN / "metrics.jsonl").read_text().splitlines()]


def _replay(run_log: RunLog) -> None:
    for r in _records():
        run_log.write(r.pop("kind"), **{k: v for k, v in r.items() if k != "time" or isinstance(v, dict)})
    run_log.close()


def _expected(name: str) -> dict[int, float]:
    """{step: value} of one namespaced series, as the committed metrics.jsonl has it (last write wins)."""
    out = {}
    for r in _records():
        if (series := namespaced(r)) is not None and name in series[1]:
            out[series[0]] = series[1][name]
    return out


def test_names_are_namespaced_as_the_anchors_do():
    step = next(r for r in _records() if r["kind"] == "step")
    _, scalars = namespaced(step)
    assert {n.split("/")[0] for n in scalars} == {"train", "buffer", "timing"}
    assert scalars["train/plain_reward"] == step["plain_reward"]
    assert scalars["buffer/size"] == step["buffer_size"] and scalars["buffer/graduated"] == step["graduated"]
    assert scalars["timing/generate"] == step["time"]["generate"]
    assert scalars["train/approx_kl"] == step["learn"]["approx_kl"]
    assert scalars["timing/learner_compute"] == step["learn"]["seconds"]
    evals = next(r for r in _records() if r["kind"] == "eval")
    assert namespaced(evals) == (0, {"eval/accuracy/all": evals["accuracy"]["all"],
                                     **{f"eval/accuracy/tier_{t}": v for t, v in evals["accuracy"].items()
                                        if t != "all"}})
    assert namespaced(next(r for r in _records() if r["kind"] == "fate")) is None


def test_tensorboard_event_files_read_back_with_tensorboards_reader(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _replay(RunLog(tmp_path, sinks=[TensorBoardSink(tmp_path / "tensorboard")]))
    acc = EventAccumulator(str(tmp_path / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/plain_reward", "buffer/size", "timing/total", "eval/accuracy/all"} <= tags
    for name in ("train/plain_reward", "buffer/admitted", "timing/learn", "eval/accuracy/tier_3"):
        got = {e.step: e.value for e in acc.Scalars(name)}
        want = _expected(name)
        assert got.keys() == want.keys() and all(abs(got[s] - want[s]) < 1e-6 for s in want), name


def _wandb_history(run_dir: Path) -> list[dict]:
    """The history records of an offline W&B run file (a LevelDB-style log of protobuf Records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, buf, out = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # block trailer
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if kind == 0:
            break
        buf += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            buf = b""
            if rec.WhichOneof("record_type") == "history":
                out.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item})
    return out


def test_wandb_offline_run_holds_the_same_series(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from zppo_ray.config import load_config

    monkeypatch.setenv("WANDB_SILENT", "true")
    cfg = load_config(None, ["metrics.wandb=true", f"trainer.run_dir={tmp_path}"])
    _replay(RunLog(tmp_path, sinks=sinks_for(cfg, tmp_path)))
    history = _wandb_history(tmp_path)
    for name in ("train/plain_reward", "buffer/size", "eval/accuracy/all"):
        got = {h["_step"]: h[name] for h in history if name in h}
        assert got == pytest.approx(_expected(name)), name
    assert (tmp_path / "wandb_run_id").read_text().strip()  # a resumed run continues this W&B run


def test_off_by_default_and_a_missing_package_is_a_config_error(tmp_path, monkeypatch):
    import importlib.util

    from zppo_ray.config import ConfigError, load_config

    assert sinks_for(load_config(None, []), tmp_path) == [] and not (tmp_path / "tensorboard").exists()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"metrics.wandb.*needs the wandb package"):
        load_config(None, ["metrics.wandb=true"])
