"""Everything a run needs, checked before anything expensive starts (README "Errors and exit statuses").

`check_run` runs after the config has loaded and before the run directory, the world's models, Ray or any
actor exist: a mistake here costs seconds, not the minutes of a world build and an engine start, and leaves
nothing behind. Each check raises the project's own error (zppo_ray/errors.py) naming the key, file or row
and what to do; `zppo_ray/cli.py` prints it on one line.

What is checked: the run directory can be written and has room for checkpoints; the metrics port is free;
a Ray address given answers; a resume checkpoint is complete; every model directory holds a config, a
tokenizer and safetensors weights; the world (if any) can be built here; every data file parses (bad rows
counted under on_bad_row=skip).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

from zppo_ray.config.schema import ConfigError
from zppo_ray.errors import CheckpointError, InfraError, ModelError
from zppo_ray.state.checkpoint import MARKER
from zppo_ray.worlds import WORLDS, is_world_alias

log = logging.getLogger("zppo_ray")

# Any of these makes a loadable tokenizer (fast, BPE, WordPiece, sentencepiece or tiktoken files).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "*.model", "*.tiktoken")
# Bytes a checkpoint takes per byte of the saved model, as a lower bound: DeepSpeed keeps fp32 master weights
# and two Adam moments besides the weights (about 16 bytes a parameter; 4x an fp32 file, 8x a bf16 one).
CHECKPOINT_FACTOR = 4


def check_run(cfg: Any, world: Any = None) -> None:
    """The checks of the module doc, cheapest first. Raises at the first problem. `world`: the run's world
    (zppo_ray/worlds/), whose own check says whether it can be built here."""
    check_run_dir(cfg)
    check_metrics_port(cfg)
    check_ray_address(cfg)
    check_resume(cfg)
    for key, model in model_configs(cfg):
        check_model_dir(model.path, f"{key}.path", tokenizer_key=f"{key}.tokenizer", tokenizer_dir=model.tokenizer)
    if world is not None:
        world.check()
    student = cfg.student.path
    if not is_world_alias(student):
        check_disk(cfg, student)  # a world's student is measured once it is built (zppo_ray/main.py)
    check_data(cfg)


# ---------------------------------------------------------------------------------------- run directory

def check_run_dir(cfg: Any) -> None:
    """The run directory (or the nearest folder above it that exists) takes a file; nothing is left there."""
    run_dir = Path(cfg.trainer.run_dir).expanduser()
    where = run_dir
    try:
        if os.path.lexists(run_dir) and not run_dir.exists():
            raise ConfigError("trainer.run_dir", f"{run_dir} is a symbolic link to nothing; remove it or choose "
                              "another place with trainer.run_dir=DIR")
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError("trainer.run_dir", f"{run_dir} exists and is not a directory")
        where = _existing(run_dir)
        if not where.is_dir():
            raise ConfigError("trainer.run_dir", f"{where} is not a directory, so {run_dir} cannot be created")
        with tempfile.TemporaryFile(dir=where):
            pass
    except OSError as e:  # EACCES on a folder above, a read-only file system...
        raise ConfigError("trainer.run_dir", f"cannot write in {where} ({e.strerror}); choose a writable place with "
                          "trainer.run_dir=DIR") from None


def _existing(path: Path) -> Path:
    """`path`, or the nearest folder above it that exists (where it would be created)."""
    return path if path.exists() else next(p for p in path.absolute().parents if p.exists())


def check_disk(cfg: Any, student_dir: str | os.PathLike) -> None:
    """Room for the checkpoints the run will add and the final model, from the size of the student's weights.
    Checkpoints already in the run directory (a resumed run) hold their space already: each new save prunes
    the oldest, so at least one more must fit."""
    weights = sum(f.stat().st_size for f in Path(student_dir).glob("*.safetensors"))
    run_dir = Path(cfg.trainer.run_dir).expanduser()
    keep = cfg.checkpoint.keep_last or 1  # 0 keeps every checkpoint: at least one must fit
    have = sum(1 for d in (run_dir / "checkpoints").glob("step-*") if (d / MARKER).exists())
    new = max(1, keep - have)
    need = weights * (CHECKPOINT_FACTOR * new + 1)
    probe = _existing(run_dir)
    free = shutil.disk_usage(probe).free
    if free < need:
        raise ConfigError("trainer.run_dir", f"{probe} has {_gib(free)} free; {new} more checkpoint(s) and the final "
                          f"model of this student need about {_gib(need)} "
                          f"(checkpoint.keep_last={cfg.checkpoint.keep_last}): free space or choose another place with "
                          "trainer.run_dir=DIR")


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n / 2**20:.0f} MiB"


# ---------------------------------------------------------------------------------------- ports and Ray

def ray_address(cfg: Any) -> tuple[str, str] | None:
    """(address, where it came from) when the run joins an existing cluster, else None."""
    if cfg.ray.address:
        return cfg.ray.address, "ray.address"
    if os.environ.get("RAY_ADDRESS"):
        return os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    return None


def check_metrics_port(cfg: Any) -> None:
    """On a run's own cluster Ray's metrics agent binds metrics.port: a port in use makes Ray's node start time
    out half a minute later with a message that does not name the port."""
    if not cfg.metrics.prometheus or ray_address(cfg) is not None or _ray_connected():
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As a server binds it: a port whose last connections linger in TIME_WAIT (a run that just ended) is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", int(cfg.metrics.port)))
        except OSError as e:
            raise ConfigError("metrics.port", f"port {cfg.metrics.port} cannot be used ({e.strerror}); choose a "
                              "free one with metrics.port=N, or metrics.prometheus=false") from None


def check_ray_address(cfg: Any, timeout_s: float = 5.0) -> None:
    """A cluster address given must answer: ray.init retries a missing one for minutes, saying only that the
    GCS timed out. `auto` and `local` are Ray's own lookups and fail fast."""
    given = ray_address(cfg)
    if given is None or given[0] in ("auto", "local") or _ray_connected():
        return
    address, source = given
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError("ray.address", f"{address!r} (from {source}) is not HOST:PORT, ray://HOST:PORT, auto "
                          "or local")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()  # [::1]:6379 too
    except OSError as e:
        raise InfraError(f"no Ray cluster answers at {address} (from {source}): {e.strerror or e}; start one "
                         "(ray start --head), correct the address, or unset it to run on a local cluster") from None


def _ray_connected() -> bool:
    """This process already joined a cluster (a benchmark running several runs, a notebook): connect_ray reuses
    it, so its port and address are in use by this very run."""
    import sys

    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


# ---------------------------------------------------------------------------------------- checkpoints

def check_resume(cfg: Any) -> None:
    if cfg.trainer.resume not in ("never", "auto"):
        check_checkpoint(Path(cfg.trainer.resume).expanduser(), cfg.algo.use_buffer, key="trainer.resume")


def check_checkpoint(d: Path, with_buffer: bool, key: str = "checkpoint") -> None:
    """A checkpoint directory holds what `zppo_ray/state/checkpoint.py` writes, finished (its COMPLETE file)."""
    try:
        _check_checkpoint(d, with_buffer, key)
    except PermissionError as e:
        raise CheckpointError(f"{key}={d}: cannot read {e.filename or d} ({e.strerror})") from None


def _check_checkpoint(d: Path, with_buffer: bool, key: str) -> None:
    if not d.is_dir():
        raise CheckpointError(f"{key}={d}: no such checkpoint directory (a run's checkpoints/step-NNNNNN)")
    missing = [name for name, ok in ((MARKER, (d / MARKER).exists()), ("trainer.json", (d / "trainer.json").exists()),
                                      ("learner/", (d / "learner").is_dir()),
                                      ("buffer/", not with_buffer or (d / "buffer").is_dir())) if not ok]
    if missing:
        interrupted = " (an interrupted save: resume from an earlier one)" if MARKER in missing else ""
        raise CheckpointError(f"{key}={d}: incomplete checkpoint (missing: {', '.join(missing)}){interrupted}")
    try:
        json.loads((d / "trainer.json").read_text())
    except ValueError as e:
        raise CheckpointError(f"{key}={d}: trainer.json does not parse ({e})") from None


# ---------------------------------------------------------------------------------------- models

def model_configs(cfg: Any) -> list[tuple[str, Any]]:
    """(config key, model section) of every model the run loads from a path (a world builds its own)."""
    from zppo_ray.algo.methods import needs_teacher

    models = [("student", cfg.student)]
    if cfg.teacher.num_replicas > 0 and needs_teacher(cfg.algo):
        models.append(("teacher.model", cfg.teacher.model))
    return [(key, m) for key, m in models if not is_world_alias(m.path)]


def check_model_dir(path: str | os.PathLike, key: str, *, tokenizer_key: str | None = None,
                    tokenizer_dir: str | os.PathLike | None = None) -> Path:
    """An HF-format model directory: config.json, a tokenizer (here or in `tokenizer_dir`) and safetensors
    weights. Returns the directory; a ModelError names what is missing."""
    try:
        return _check_model_dir(path, key, tokenizer_key, tokenizer_dir)
    except PermissionError as e:
        raise ModelError(f"{key}={path}: cannot read {e.filename or path} ({e.strerror})") from None


def _check_model_dir(path, key, tokenizer_key, tokenizer_dir) -> Path:
    d = Path(path).expanduser()
    if not d.exists() and _hub_id(path):
        d = _hub_snapshot(str(path), key)
    if not d.exists():
        raise ModelError(f"{key}={path}: no such directory; give an HF-format model directory (config.json, a "
                         f"tokenizer, *.safetensors) or a world's model ({', '.join(f'{w}:student' for w in WORLDS)})")
    if not d.is_dir():
        raise ModelError(f"{key}={path}: not a directory (an HF-format model directory holds config.json, a "
                         "tokenizer and *.safetensors)")
    missing = []
    if not (d / "config.json").exists():
        missing.append("config.json")
    if tokenizer_dir is not None:
        check_tokenizer_dir(tokenizer_dir, tokenizer_key or f"{key} tokenizer")
    elif not _has_tokenizer(d):
        elsewhere = f"; or set {key.removesuffix('.path')}.tokenizer" if key.endswith(".path") else ""
        missing.append(f"a tokenizer ({', '.join(TOKENIZER_FILES)}{elsewhere})")
    missing += _missing_weights(d)
    if missing:
        bins = " (it holds PyTorch .bin weights: save them as safetensors with save_pretrained)" \
            if any(d.glob("*.bin")) and any(m.startswith("*.safetensors") for m in missing) else ""
        raise ModelError(f"{key}={path}: not a complete HF-format model directory; missing: {'; '.join(missing)}{bins}")
    return d


def _hub_id(path: Any) -> bool:
    """'org/name': a Hugging Face model id rather than a relative directory."""
    text = str(path)
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and all(text.split("/"))


def _hub_snapshot(repo_id: str, key: str) -> Path:
    """The local Hugging Face cache's copy of a model id: zppo_ray never downloads at run time."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - not cached (LocalEntryNotFoundError), or no hub library: say what to do
        raise ModelError(f"{key}={repo_id}: no such directory, and not in the local Hugging Face cache (nothing is "
                         f"downloaded at run time): `huggingface-cli download {repo_id}` first, or give a "
                         "directory") from None


def check_tokenizer_dir(path: str | os.PathLike, key: str) -> None:
    d = Path(path).expanduser()
    if not d.is_dir() or not _has_tokenizer(d):
        raise ModelError(f"{key}={path}: no tokenizer there (none of {', '.join(TOKENIZER_FILES)})")


def _has_tokenizer(d: Path) -> bool:
    return any(any(d.glob(pattern)) for pattern in TOKENIZER_FILES)


def _missing_weights(d: Path) -> list[str]:
    index = d / "model.safetensors.index.json"
    if index.exists():
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, AttributeError) as e:
            return [f"a readable {index.name} ({e})"]
        absent = sorted(s for s in shards if not (d / s).exists())
        return [f"shard(s) {', '.join(absent)} listed in {index.name}"] if absent else []
    return [] if any(d.glob("*.safetensors")) else ["*.safetensors weights"]


# ---------------------------------------------------------------------------------------- data

def check_data(cfg: Any) -> None:
    """Every file source parses. Under on_bad_row=error the first bad row raises its DataError (file, line,
    reason and what to do); under skip the bad rows are counted and their first line numbers logged. Prompt
    lengths need the tokenizer and are checked when the run loads the data for real."""
    from zppo_ray.data.loaders import load_questions_report

    for section in ("train", "eval"):
        for src in getattr(cfg.data, section):
            if src.path in WORLDS:  # generated: no file to parse
                continue
            _, report = load_questions_report(src, None, cfg.data.on_bad_row, log_report=False)
            if report.skipped:
                log.warning("data.%s %s: %s", section, src.path, report.summary())
