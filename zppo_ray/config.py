"""The one typed schema of a run: defaults ← YAML file ← dotted CLI overrides, checked before anything starts.

Why one module: every actor, the trainer and the tests read the same dataclasses, so a key exists in exactly
one place with one default and one docstring. Defaults describe the CPU toy world (tiny models bootstrapped
locally, no GPU); the paper recipe is `configs/paper_8x8_h100.yaml`.

Why our own merge walker instead of a bare `OmegaConf.merge`: OmegaConf loses the key path inside lists of
structured items ("full_key: bogus" instead of "data.train[0].bogus") and warns on implicit conversions.
The walker follows the dataclass types, lets OmegaConf validate each leaf, and turns every failure into a
`ConfigError` naming the full key path and what is allowed there.

    python -m zppo_ray.config [config.yaml] [key=value ...] [--available-gpus N]   # prints the resolved YAML
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import logging
import math
import os
import re
import sys
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zppo_ray.algo.methods import METHODS
from zppo_ray.algo.reformulate import Templates, check_templates

log = logging.getLogger(__name__)

# Attention head sizes the vLLM CPU backend supports (stack.md).
CPU_HEAD_DIMS = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256)

Kind = Literal["math", "mc", "free"]


class ConfigError(ValueError):
    """A bad configuration. `problems` is a list of (key path, message); str() lists them all."""

    def __init__(self, problems: list[tuple[str, str]] | str, message: str | None = None):
        if isinstance(problems, str):
            problems = [(problems, message or "invalid value")]
        self.problems = problems
        self.key = problems[0][0]
        lines = [f"{k}: {m}" for k, m in problems]
        text = lines[0] if len(lines) == 1 else f"{len(lines)} config problems:\n  " + "\n  ".join(lines)
        super().__init__(text)


# ---------------------------------------------------------------------------------------------- schema


@dataclass
class ModelConfig:
    """A model served by vLLM and (for the student) trained by DeepSpeed."""

    path: str = "toy:student"  # "toy:student" / "toy:teacher": the locally bootstrapped toy models; else HF id/dir
    tokenizer: Optional[str] = None  # None: same as path
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    max_model_len: int = 1024  # prompt + response tokens the engine must hold
    trust_remote_code: bool = False


@dataclass
class SourceConfig:
    """One data source. `path`: "toy", a .parquet/.jsonl file, a directory of them, or "hf:DIR"
    (a `datasets` object saved with save_to_disk)."""

    path: str = "toy"
    split: Optional[str] = None  # toy: train|eval; directories: keep files named/under it; hf: DatasetDict key
    column_map: Any = None  # None (identity), a preset name (gsm8k, math, mmlu, mmlu_pro) or {field: column}
    answer_transform: Optional[str] = None  # overrides the column map's transform (gsm8k_hash, math_boxed, ...)
    kind: Optional[Kind] = None  # default kind for rows without a kind column (None: the preset's, else math)
    limit: Optional[int] = None  # at most this many questions from this source
    name: Optional[str] = None  # Question.source label (None: file stem / hf:DIR / "toy")
    render_choices: bool = True  # mc: append "(A) ...\n(B) ..." to the prompt text


@dataclass
class DataConfig:
    train: list[SourceConfig] = field(default_factory=lambda: [SourceConfig(path="toy", split="train")])
    eval: list[SourceConfig] = field(default_factory=lambda: [SourceConfig(path="toy", split="eval")])
    on_bad_row: Literal["error", "skip"] = "error"
    max_prompt_tokens: int = 128  # plain question length cap (checked at load time when a tokenizer is given)
    shuffle_seed: int = 0  # order of the one pass over the training questions


@dataclass
class ToyModelConfig:
    """Architecture + pretraining of one toy model (built from scratch at first use, cached)."""

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 256
    max_position_embeddings: int = 1024
    pretrain_steps: int = 1500
    pretrain_batch_size: int = 64
    pretrain_lr: float = 3e-3
    pretrain_docs: int = 20000  # documents drawn from the pretraining pool (see zppo_ray/worlds/toy/corpus.py)
    # Share of pretraining documents per tier (mostly the hard tier: the long chains need the most practice).
    tier_weights: list[float] = field(default_factory=lambda: [0.2, 0.3, 0.5])
    # Per tier, the share of plain worked solutions in the pretraining corpus that stop after two steps and
    # box that running value (toy/world.py shortcut_solution). Student only. The default gives the student
    # the skill for long chains AND the habit of cutting them short most of the time: greedy it fails the
    # hard tier, sampled it finishes a long chain (and is then right) about a third of the time. That is
    # a behaviour RL can change, which is what the toy world is for. Raise the hard tier's share (0.9:
    # ~3% finished chains) for a student that GRPO alone can hardly move.
    shortcut: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])


@dataclass
class ToyConfig:
    """The generated toy world: questions in difficulty tiers and two tiny models."""

    seed: int = 0
    n_train: int = 200  # per tier
    n_eval: int = 50  # per tier
    tiers: list[int] = field(default_factory=lambda: [2, 3, 5])  # operands per question, one tier each
    # Share of multiple-choice questions. 0 by default: the tiny models learn the arithmetic within the
    # bootstrap budget (teacher 100% on every tier) but not the option scan that turns a value into a
    # letter (teacher 18-30% on MC at 0.25, measured); raise it to exercise the MC path end to end.
    mc_fraction: float = 0.0
    vocab_size: int = 512  # BPE vocabulary of the locally built tokenizer
    pretrain_pool_per_tier: int = 20000  # distinct pretraining questions per tier (never held-out ones)
    cache_dir: str = "${oc.env:ZPPO_CACHE,'~/.cache/zppo_ray/toy'}"  # consumers call expanduser()
    # Both models share one architecture and pretraining budget; they differ in the student's habit of
    # stopping long chains early (and in nothing else), so every gap between them is one RL can close.
    student: ToyModelConfig = field(default_factory=lambda: ToyModelConfig(shortcut=[0.0, 0.0, 0.6]))
    teacher: ToyModelConfig = field(default_factory=ToyModelConfig)


@dataclass
class RolloutConfig:
    """Student generation (vLLM). GPU counts: 0 on CPU, else = tp (one GPU per tensor-parallel shard)."""

    num_workers: int = 1
    tp: int = 1
    gpus_per_worker: int = 0
    cpus_per_worker: float = 1.0
    group_size: int = 8  # G_S
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 128
    max_prompt_tokens: int = 384  # any student prompt, BCQ/NCQ included (> data.max_prompt_tokens)
    max_num_seqs: int = 256
    colocate_with_learner: bool = False  # rollout engines share the learner's GPUs
    kv_cache_gib: float = 1.0  # CPU only (VLLM_CPU_KVCACHE_SPACE)
    gpu_memory_utilization: float = 0.9
    seed: int = 0
    max_restarts: int = 3  # per worker slot: a dead worker is replaced this many times (README "Recovery")
    request_timeout_s: float = 3600.0  # a generate call past this is retried on the other workers


@dataclass
class TeacherConfig:
    """The frozen teacher group: BCQ positives, compression, judge, top-k scoring."""

    model: ModelConfig = field(default_factory=lambda: ModelConfig(path="toy:teacher"))
    num_replicas: int = 1
    tp: int = 1
    gpus_per_replica: int = 0  # 0 on CPU, else = tp
    cpus_per_replica: float = 1.0
    group_size: int = 4  # G_T
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 128
    compress: bool = True  # False: candidates are truncated to compress_max_tokens instead
    compress_max_tokens: int = 512
    compress_max_lines: int = 5
    judge_max_tokens: int = 512  # the judge always decodes at temperature 0
    request_timeout_s: float = 600.0
    topk_logprobs: int = 20  # for on-policy distillation scoring
    kv_cache_gib: float = 1.0
    gpu_memory_utilization: float = 0.9
    seed: int = 0
    max_restarts: int = 3  # per replica slot


@dataclass
class BufferConfig:
    """Prompt replay buffer policy (spec §2.10, open points §8)."""

    capacity: int = 10000
    tau: float = "${algo.tau}"  # type: ignore[assignment]  # graduation threshold; follows algo.tau by default
    sample_with_replacement: bool = False
    refresh_position_on_revisit: bool = False  # a still-hard replayed question moves to the FIFO tail
    graduation: Literal["single", "ema"] = "single"  # one visit's accuracy, or an EMA over visits
    ema_alpha: float = 0.5  # weight of the newest visit when graduation = ema


@dataclass
class LearnerConfig:
    """DeepSpeed ranks as Ray actors. gpus_per_rank: 0 on CPU, 1 on GPU."""

    num_ranks: int = 1
    gpus_per_rank: int = 0
    cpus_per_rank: float = 1.0
    zero_stage: int = 0
    offload: bool = False  # ZeRO optimizer-state offload to CPU (needs zero_stage >= 1)
    precision: Literal["fp32", "bf16"] = "fp32"
    lr: float = 5e-5  # constant; toy scale (the paper uses 1e-6 for 0.8B-9B students: configs/paper_8x8_h100.yaml)
    warmup_steps: int = 0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # 0 disables clipping
    micro_batch_size: int = 4  # rollouts per forward/backward on one rank
    gradient_checkpointing: bool = False


@dataclass
class AlgoConfig:
    """The algorithm. `name` is a method of `zppo_ray.algo.methods.METHODS`, which presets the switches."""

    name: str = "zppo"
    advantage: Literal["zppo", "center", "norm_with_zero", "grpo"] = "zppo"
    adv_eps: float = 1e-6  # ε in (A' - μ_S) / (σ_S + ε)
    tau: float = 0.5  # hard if plain group accuracy < tau
    rho_replay: float = 0.25  # |X_replay| = rho_replay · |X_new|
    rho_aug: float = 0.25  # cap on BCQ+NCQ instances = rho_aug · |X_new|
    enable_bcq: bool = True
    enable_ncq: bool = True
    use_buffer: bool = True
    updates_per_step: int = 4  # I equal mini-batches, one optimizer step each
    minibatch_split: Literal["shuffle", "in_order"] = "shuffle"  # how extra (BCQ/NCQ) rollouts spread
    eps_low: float = 0.2
    eps_high: float = 0.28
    dual_clip: float = 10.0  # c > 1; 0 disables
    kl_coef: float = 0.0
    kl_type: Literal["k1", "k2", "k3"] = "k3"
    loss_agg: Literal["token_mean", "seq_mean_token_sum", "seq_mean_token_mean"] = "token_mean"
    entropy_coef: float = 0.0
    ncq_list_unparseable: bool = False  # list wrong rollouts without a \boxed answer in the NCQ "WRONG" line
    prefix_alpha: float = 0.4
    jsd_beta: float = 0.5
    divergence: Literal["jsd", "forward_kl", "reverse_kl"] = "jsd"  # the distillation baselines' loss
    # Knobs users of modern GRPO expect; all off as in the spec.
    # dynamic_sampling (DAPO-style filter): drop groups whose rewards are all equal from the loss (no
    # refill). Such groups have advantage 0 under every estimator here, so what changes is the token-mean
    # denominator (the remaining tokens weigh more). Hard questions still reach the buffer and BCQ/NCQ:
    # the filter runs after them. Spec §7 lists dynamic sampling as conflicting with ZPPO (DAPO drops
    # all-wrong prompts, the very ones ZPPO reformulates); keep it off for ZPPO except as an ablation.
    dynamic_sampling: bool = False
    overlong_filter: bool = False  # samples cut at max_new_tokens keep their group but lose their loss


@dataclass
class EvalConfig:
    """Evaluation decoding (spec §6)."""

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    # The paper evaluates with 1.5 (configs/paper_8x8_h100.yaml); the toy default is 0 because its answers
    # must repeat digits (a chain "3+8=1,1*2=2" reuses 1 and 2), which a presence penalty punishes.
    presence_penalty: float = 0.0
    max_new_tokens: int = 128
    num_samples: int = 1  # pass@1 averaged over this many samples


@dataclass
class TrainerConfig:
    steps: int = 20
    prompts_per_step: int = 16  # |X_new|
    eval_every: int = 10  # 0: never
    seed: int = 0
    run_dir: str = "runs/${now:%Y%m%d-%H%M%S}"  # set it explicitly to resume a run
    resume: str = "never"  # never | auto (latest checkpoint in run_dir, if any) | a checkpoint path
    # Plain rollouts are requested in this many chunks; each chunk is graded as soon as it arrives and the
    # teacher starts on its hard questions while the student samples the rest (overlap).
    plain_chunks: int = 2
    # A learner rank that dies takes its optimizer state with it: the run rolls back to the last complete
    # checkpoint with a new learner group, at most this many times; then (or with no checkpoint yet) it stops
    # with a message to rerun with trainer.resume=auto (README "Recovery").
    learner_restarts: int = 2


@dataclass
class MetricsConfig:
    """Prometheus metrics (zppo_ray/observe/prometheus.py) are recorded in every Ray process, always; Ray's metrics
    agent serves them per node. `prometheus: true` fixes the port of the local cluster a run starts itself
    (a random port otherwise); a joined cluster uses its own `ray start --metrics-export-port`."""

    prometheus: bool = False
    port: int = 8080  # metrics export port of a local cluster started by the run
    log_every: int = 1
    jsonl: bool = True  # run log (metrics.jsonl) in run_dir


@dataclass
class CheckpointConfig:
    every: int = 10  # K steps; 0: only at the end
    keep_last: int = 2  # 0: keep all


@dataclass
class RayConfig:
    address: Optional[str] = None  # None: RAY_ADDRESS env, else a local cluster
    num_cpus: Optional[int] = None  # local cluster only
    namespace: str = "zppo"


@dataclass
class RunConfig:
    student: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    toy: ToyConfig = field(default_factory=ToyConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    # Every prompt string (zppo_ray/algo/reformulate.py); defaults: the paper's exact strings (spec §9).
    templates: Templates = field(default_factory=Templates)


def _now(fmt: str = "%Y%m%d-%H%M%S") -> str:
    """`${now:FMT}`: the load time (cached per config, so every reference agrees)."""
    return datetime.datetime.now().strftime(fmt)


if not OmegaConf.has_resolver("now"):  # register_resolver is 2.4's name for register_new_resolver
    getattr(OmegaConf, "register_resolver", OmegaConf.register_new_resolver)("now", _now, use_cache=True)

# ---------------------------------------------------------------------------------------------- loading


def load_config(
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    *,
    available_gpus: int | None = None,
    check_paths: bool = False,
) -> RunConfig:
    """Structured defaults ← YAML file ← `key=value` overrides, then `validate`. Raises ConfigError."""
    node = OmegaConf.structured(RunConfig)
    touched: set[str] = set()
    if path is not None:
        _apply(node, RunConfig, _read_yaml(Path(path)), "", touched)
    for item in overrides:
        _apply(node, RunConfig, _parse_override(item), "", touched)
    _apply_algorithm_preset(node, touched)
    try:
        for key in sorted(touched):  # the user's own keys first, so a bad interpolation is blamed on them
            OmegaConf.select(node, key, throw_on_missing=True)
        cfg = OmegaConf.to_object(node)
    except (OmegaConfBaseException, OverflowError) as e:  # OverflowError: an interpolated int too big for float
        raise ConfigError(_failed_key(e) or ", ".join(_interpolated(node, touched)) or "<root>",
                          _first_line(e)) from None
    assert isinstance(cfg, RunConfig)
    validate(cfg, available_gpus=available_gpus, check_paths=check_paths)
    return cfg


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_resolved(cfg: RunConfig, run_dir: str | os.PathLike) -> Path:
    """Write the fully resolved config as `run_dir/config.yaml` (loadable again with load_config)."""
    out = Path(run_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    target = out / "config.yaml"
    from zppo_ray.redact import redact_text

    target.write_text(redact_text(to_yaml(cfg)))  # a credential in a URL or override never lands on disk
    return target


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError("<file>", f"config file not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except Exception as e:  # yaml.YAMLError and OmegaConf grammar errors
        raise ConfigError("<file>", f"cannot parse {path}: {e}") from None
    data = OmegaConf.to_container(loaded, resolve=False)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("<file>", f"{path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _parse_override(item: str) -> dict:
    """`a.b=v` / `a.list[0].b=v` / `a.list.0.b=v` → nested dict; the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    key = re.sub(r"\[(\d+)\]", r".\1", key.strip())
    if not sep or not key:
        raise ConfigError(item or "<override>", "an override must look like key.path=value (e.g. algo.tau=0.5)")
    if not re.fullmatch(r"[\w-]+(\.[\w-]+)*", key):  # OmegaConf's own key parser crashes on some ("[=")
        raise ConfigError(key, f"an override key is a dotted path such as algo.tau or data.train[0].path, got {key!r}")
    try:
        parsed = OmegaConf.from_dotlist([f"{key}={raw}"])
    # YAML's own errors ("'", "}", control characters) and ValueError (an int of more than 4300 digits)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError) as e:
        path = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)  # spelled like every other error: data.train[0].path
        raise ConfigError(path, f"cannot parse override {item!r}: {_first_line(e)}") from None
    return OmegaConf.to_container(parsed, resolve=False)  # type: ignore[return-value]


def _apply(node: DictConfig, cls: type, value: Any, path: str, touched: set[str]) -> None:
    """Merge plain `value` into the structured `node` of dataclass `cls`, naming `path` in every error."""
    if not isinstance(value, Mapping):
        raise ConfigError(path or "<root>", f"expected {_describe(cls)}, got {value!r}")
    hints = _hints(cls)
    for key, val in value.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in hints:
            near = difflib.get_close_matches(str(key), list(hints), n=1)
            hint = f" (did you mean '{_join(path, near[0])}'?)" if near else ""
            raise ConfigError(key_path, f"unknown key{hint}; allowed keys here: {', '.join(hints)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            _apply(node[key], tp, val, key_path, touched)
        elif (elem := _list_of_dataclass(tp)) is not None:
            _apply_list(node, key, elem, val, key_path, touched)
        else:
            _assign(node, key, val, key_path, tp)
            touched.add(key_path)


def _apply_list(node: DictConfig, key: str, elem: type, val: Any, path: str, touched: set[str]) -> None:
    """A list of sections: a list replaces it; {index: {...}} (dotted overrides) edits or appends items."""
    if isinstance(val, (list, tuple)):
        items = []
        for i, item in enumerate(val):
            sub = OmegaConf.structured(elem)
            _apply(sub, elem, item, f"{path}[{i}]", touched)
            items.append(sub)
        node[key] = items
        return
    if isinstance(val, Mapping) and all(_is_index(k) for k in val):
        current: ListConfig = node[key]
        for k in sorted(val, key=int):
            i = int(k)
            if i > len(current):
                raise ConfigError(f"{path}[{i}]", f"index out of range: the list has {len(current)} items")
            if i == len(current):
                current.append(OmegaConf.structured(elem))
            _apply(current[i], elem, val[k], f"{path}[{i}]", touched)
        return
    raise ConfigError(path, f"expected a list of {_describe(elem)}, got {val!r}")


def _is_index(key: Any) -> bool:
    """A list index as dotted overrides spell it: 0 or "0". ASCII digits only: "²".isdigit() is True too,
    but int("²") fails."""
    if isinstance(key, int):
        return not isinstance(key, bool) and key >= 0
    return isinstance(key, str) and key.isascii() and key.isdigit()


def _assign(node: DictConfig, key: str, val: Any, path: str, tp: Any) -> None:
    try:
        OmegaConf.update(node, key, val, merge=False)
    except (OmegaConfBaseException, OverflowError) as e:  # OverflowError: float(10**400), not wrapped by OmegaConf
        raise ConfigError(path, f"expected {_describe(tp)}, got {val!r} ({_first_line(e)})") from None


def _apply_algorithm_preset(node: DictConfig, touched: set[str]) -> None:
    m = METHODS.get(node.algo.name)
    preset = m.presets if m is not None else {}
    for key, value in preset.items():
        if f"algo.{key}" not in touched:
            node.algo[key] = value
        elif node.algo[key] != value:
            log.warning("algo.%s=%s overrides the %r preset (%s)", key, node.algo[key], node.algo.name, value)


def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _list_of_dataclass(tp: Any) -> type | None:
    if typing.get_origin(tp) is list:
        (arg,) = typing.get_args(tp)
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _describe(tp: Any) -> str:
    """Human wording of a type hint, for error messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is typing.Union:
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"a list of {_describe(args[0])}" if args else "a list"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    names = {float: "a number (float)", int: "an integer", bool: "a boolean (true/false)", str: "a string"}
    return names.get(tp, "any value")


def _failed_key(e: BaseException) -> str:
    """The key path OmegaConf blames: its own exceptions carry it, others only in their text; "" if none."""
    key = getattr(e, "full_key", None)
    found = re.search(r"full_key: (\S+)", str(e))
    return str(key or (found.group(1) if found else ""))


def _interpolated(node: DictConfig, touched: set[str]) -> list[str]:
    """The user's keys holding an interpolation. Only these are type-checked late (when resolved), and a
    list field given `${...}` of a scalar fails there without OmegaConf naming any key."""
    plain = OmegaConf.to_container(node, resolve=False)
    out = []
    for key in sorted(touched):
        value: Any = plain
        for part in re.findall(r"[^.\[\]]+", key):  # data.train[0].path -> data, train, 0, path
            if isinstance(value, list):
                value = value[int(part)] if part.isdigit() and int(part) < len(value) else None
            else:
                value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and "${" in value:
            out.append(key)
    return out


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ---------------------------------------------------------------------------------------------- validation


def validate(
    cfg: RunConfig,
    *,
    available_gpus: int | None = None,
    cuda_available: bool | None = None,
    check_paths: bool = False,
) -> None:
    """Cross-field and range checks. Collects every problem, then raises one ConfigError listing them.

    `available_gpus`: when given, the GPUs the layout asks for must fit. `cuda_available`: None probes torch
    (only needed when a toy model is used). `check_paths`: also require local data files / resume paths.
    """
    p: list[tuple[str, str]] = []
    _check_not_nan(cfg, "", p)
    _check_ranges(cfg, p)
    _check_lengths(cfg, p)
    _check_algo(cfg, p)
    _check_data(cfg, p, check_paths)
    _check_toy_models(cfg, p, cuda_available)
    _check_gpus(cfg, p, available_gpus)
    p.extend((f"templates.{k}", m) for k, m in check_templates(cfg.templates))
    if check_paths and cfg.trainer.resume not in ("never", "auto"):
        if not _exists(cfg.trainer.resume):
            p.append(("trainer.resume", "'never', 'auto' or an existing checkpoint path; "
                      f"{cfg.trainer.resume!r} does not exist"))
    if p:
        raise ConfigError(p)


def _get(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _range(cfg: RunConfig, p: list, key: str, lo: float | None, hi: float | None, *,
           lo_open: bool = False, hi_open: bool = False) -> None:
    """Append a problem unless lo ≤ value ≤ hi (open ends exclusive, None = unbounded)."""
    v = _get(cfg, key)
    too_low = lo is not None and (v <= lo if lo_open else v < lo)
    too_high = hi is not None and (v >= hi if hi_open else v > hi)
    bad = too_low or too_high
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        p.append((key, f"must be in {left}{lo_s}, {hi_s}{right}, got {v!r}"))


_UNIT = ["algo.tau", "algo.rho_replay", "algo.rho_aug", "buffer.tau", "algo.prefix_alpha", "algo.jsd_beta"]
_AT_LEAST_1 = [
    "rollout.num_workers", "rollout.tp", "rollout.max_new_tokens", "rollout.max_prompt_tokens",
    "rollout.max_num_seqs", "rollout.group_size", "teacher.tp", "teacher.group_size", "teacher.max_new_tokens",
    "teacher.compress_max_tokens", "teacher.compress_max_lines", "teacher.judge_max_tokens",
    "learner.num_ranks", "learner.micro_batch_size", "buffer.capacity", "algo.updates_per_step",
    "trainer.prompts_per_step", "trainer.plain_chunks", "metrics.log_every", "data.max_prompt_tokens",
    "student.max_model_len",
    "teacher.model.max_model_len", "eval.max_new_tokens", "eval.num_samples",
]
_AT_LEAST_0 = [
    "teacher.num_replicas", "teacher.topk_logprobs", "trainer.steps", "trainer.eval_every", "checkpoint.every",
    "checkpoint.keep_last", "learner.warmup_steps", "learner.weight_decay", "learner.grad_clip",
    "algo.kl_coef", "algo.entropy_coef", "algo.eps_high", "teacher.temperature", "eval.temperature",
    "rollout.cpus_per_worker", "teacher.cpus_per_replica", "learner.cpus_per_rank",
    "rollout.kv_cache_gib", "teacher.kv_cache_gib",
    "rollout.max_restarts", "teacher.max_restarts", "trainer.learner_restarts",
]
_POSITIVE = ["rollout.temperature", "learner.lr", "learner.eps", "algo.adv_eps", "teacher.request_timeout_s",
             "rollout.request_timeout_s"]
_PROB = ["rollout.top_p", "teacher.top_p", "eval.top_p", "rollout.gpu_memory_utilization",
         "teacher.gpu_memory_utilization", "buffer.ema_alpha"]


def _check_not_nan(obj: Any, path: str, p: list) -> None:
    """NaN passes every `<`/`>` range check unnoticed (each comparison is False): refuse it anywhere."""
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            _check_not_nan(getattr(obj, f.name), _join(path, f.name), p)
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            _check_not_nan(item, f"{path}[{i}]", p)
    elif isinstance(obj, float) and math.isnan(obj):
        p.append((path, "must be a number, got nan"))


def _exists(path: str) -> bool:
    """Path.exists() for a user-given path; one the OS refuses (too long, NUL byte, "~nouser/") is absent."""
    try:
        return Path(path).expanduser().exists()
    except (OSError, ValueError, RuntimeError):
        return False


def _check_ranges(cfg: RunConfig, p: list) -> None:
    for key in _UNIT:
        _range(cfg, p, key, 0.0, 1.0)
    for key in _AT_LEAST_1:
        _range(cfg, p, key, 1, None)
    for key in _AT_LEAST_0:
        _range(cfg, p, key, 0, None)
    for key in _POSITIVE:
        _range(cfg, p, key, 0, None, lo_open=True)
    for key in _PROB:
        _range(cfg, p, key, 0.0, 1.0, lo_open=True)
    _range(cfg, p, "algo.eps_low", 0.0, 1.0, hi_open=True)
    _range(cfg, p, "learner.zero_stage", 0, 3)
    _range(cfg, p, "metrics.port", 1, 65535)
    for key in ("rollout.top_k", "eval.top_k"):
        if _get(cfg, key) == 0 or _get(cfg, key) < -1:
            p.append((key, f"-1 (off) or >= 1, got {_get(cfg, key)}"))
    if cfg.algo.dual_clip != 0 and cfg.algo.dual_clip <= 1:
        p.append(("algo.dual_clip", f"0 (off) or > 1, got {cfg.algo.dual_clip}"))
    betas = cfg.learner.betas
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        p.append(("learner.betas", f"two numbers in [0, 1), got {list(betas)}"))
    if cfg.learner.offload and cfg.learner.zero_stage == 0:
        p.append(("learner.offload", "CPU offload needs learner.zero_stage in 1..3 (got 0)"))
    if cfg.trainer.resume in ("", None):
        p.append(("trainer.resume", "'never', 'auto' or a checkpoint path"))
    if not cfg.trainer.run_dir:
        p.append(("trainer.run_dir", "must be a non-empty path"))


def _check_lengths(cfg: RunConfig, p: list) -> None:
    r, t, d = cfg.rollout, cfg.teacher, cfg.data
    if d.max_prompt_tokens > r.max_prompt_tokens:
        p.append(("data.max_prompt_tokens", f"must be <= rollout.max_prompt_tokens ({r.max_prompt_tokens}), "
                  f"got {d.max_prompt_tokens}: BCQ/NCQ prompts extend plain ones"))
    if r.max_prompt_tokens + r.max_new_tokens > cfg.student.max_model_len:
        p.append(("student.max_model_len", f"must be >= rollout.max_prompt_tokens + rollout.max_new_tokens "
                  f"({r.max_prompt_tokens + r.max_new_tokens}), got {cfg.student.max_model_len}"))
    if cfg.eval.max_new_tokens + d.max_prompt_tokens > cfg.student.max_model_len:
        p.append(("eval.max_new_tokens", f"data.max_prompt_tokens + eval.max_new_tokens must be <= "
                  f"student.max_model_len ({cfg.student.max_model_len})"))
    if t.num_replicas > 0:
        need = d.max_prompt_tokens + t.max_new_tokens
        if t.compress:  # the teacher reads a whole student response and writes a summary
            need = max(need, d.max_prompt_tokens + r.max_new_tokens + t.compress_max_tokens)
        if need > t.model.max_model_len:
            p.append(("teacher.model.max_model_len", f"must be >= {need} (data.max_prompt_tokens + "
                      "max(teacher.max_new_tokens, rollout.max_new_tokens + teacher.compress_max_tokens)), "
                      f"got {t.model.max_model_len}"))


def _check_algo(cfg: RunConfig, p: list) -> None:
    a = cfg.algo
    m = METHODS.get(a.name)
    if m is None:
        p.append(("algo.name", f"unknown algorithm {a.name!r}; allowed: {', '.join(METHODS)}"))
        return
    if m.step == "group" and cfg.rollout.group_size < 2:
        p.append(("rollout.group_size",
                  f"group advantages ({a.advantage}) need G_S >= 2, got {cfg.rollout.group_size}"))
    if cfg.teacher.num_replicas == 0 and m.always_teacher:
        p.append(("teacher.num_replicas", f"algorithm {a.name!r} uses the teacher: need >= 1 replica"))
    if cfg.teacher.num_replicas == 0 and (a.enable_bcq or a.enable_ncq):
        p.append(("teacher.num_replicas", "algo.enable_bcq / algo.enable_ncq need the teacher: >= 1 replica"))
    if a.dynamic_sampling and a.name == "zppo":
        log.warning("algo.dynamic_sampling with ZPPO: spec §7 lists dynamic sampling as conflicting with ZPPO; "
                    "here it only drops all-equal groups from the loss (their advantage is 0; the remaining "
                    "tokens weigh more) after the hard questions went to the buffer and BCQ/NCQ. Use it as an "
                    "ablation only")
    if a.dynamic_sampling and m.step != "group":
        p.append(("algo.dynamic_sampling", f"filters reward groups; {a.name!r} has none"))
    if not m.builds_reformulations:  # its step builds no BCQ/NCQ: refuse the switches, never ignore them
        for key in ("enable_bcq", "enable_ncq"):
            if getattr(a, key):
                p.append((f"algo.{key}", f"{a.name!r} builds no BCQ/NCQ prompts; set it false or use a "
                          "zppo/grpo_* method"))
    rollouts = cfg.trainer.prompts_per_step * cfg.rollout.group_size
    needed = a.updates_per_step * cfg.learner.num_ranks
    if a.updates_per_step >= 1 and rollouts < needed:
        p.append(("algo.updates_per_step", f"trainer.prompts_per_step × rollout.group_size = {rollouts} rollouts "
                  f"cannot fill {a.updates_per_step} mini-batches × learner.num_ranks {cfg.learner.num_ranks} "
                  f"with >= 1 rollout each (need >= {needed})"))


def _check_data(cfg: RunConfig, p: list, check_paths: bool) -> None:
    from zppo_ray.data.loaders import TRANSFORMS, resolve_column_map  # light: no pyarrow/Ray at import

    for section in ("train", "eval"):
        sources = getattr(cfg.data, section)
        if section == "train" and not sources:
            p.append(("data.train", "at least one training source"))
        for i, src in enumerate(sources):
            key = f"data.{section}[{i}]"
            try:
                resolve_column_map(src.column_map)
            except ValueError as e:
                p.append((f"{key}.column_map", str(e)))
            if src.answer_transform is not None and src.answer_transform not in TRANSFORMS:
                p.append((f"{key}.answer_transform",
                          f"one of {', '.join(TRANSFORMS)} or null, got {src.answer_transform!r}"))
            if src.limit is not None and src.limit < 1:
                p.append((f"{key}.limit", f"null or >= 1, got {src.limit}"))
            if src.path == "toy" and src.split not in ("train", "eval"):
                p.append((f"{key}.split", f"toy sources need split 'train' or 'eval', got {src.split!r}"))
            local = src.path != "toy" and not src.path.startswith("hf:")
            if local and not src.path.endswith((".parquet", ".jsonl")) and Path(src.path).suffix:
                p.append((f"{key}.path",
                          f"'toy', 'hf:DIR', a .parquet/.jsonl file or a directory, got {src.path!r}"))
            if check_paths and (local or src.path.startswith("hf:")):
                target = src.path.removeprefix("hf:")
                if not _exists(target):
                    p.append((f"{key}.path", f"does not exist: {target}"))


def _check_toy_models(cfg: RunConfig, p: list, cuda_available: bool | None) -> None:
    used = [("toy.student", cfg.toy.student, cfg.student)] if cfg.student.path == "toy:student" else []
    if cfg.teacher.model.path == "toy:teacher" and cfg.teacher.num_replicas > 0:
        used.append(("toy.teacher", cfg.toy.teacher, cfg.teacher.model))
    for name, model_path in (("student.path", cfg.student.path), ("teacher.model.path", cfg.teacher.model.path)):
        if model_path.startswith("toy:") and model_path not in ("toy:student", "toy:teacher"):
            p.append((name, f"toy models are 'toy:student' or 'toy:teacher', got {model_path!r}"))
    toy = cfg.toy
    if not toy.tiers or any(t < 2 for t in toy.tiers):
        p.append(("toy.tiers", f"a non-empty list of operand counts >= 2, got {list(toy.tiers)}"))
    if not 0.0 <= toy.mc_fraction <= 1.0:
        p.append(("toy.mc_fraction", f"must be in [0, 1], got {toy.mc_fraction}"))
    for key, arch in (("toy.student", toy.student), ("toy.teacher", toy.teacher)):
        w = list(arch.tier_weights)
        if len(w) != len(toy.tiers) or any(x < 0 for x in w) or sum(w) <= 0:
            p.append((f"{key}.tier_weights", f"{len(toy.tiers)} non-negative weights (one per toy.tiers "
                      f"entry) with a positive sum, got {w}"))
        sc = list(arch.shortcut)
        if len(sc) != len(toy.tiers) or any(not 0.0 <= x <= 1.0 for x in sc):
            p.append((f"{key}.shortcut", f"{len(toy.tiers)} shares in [0, 1] (one per toy.tiers entry), got {sc}"))
    if any(toy.teacher.shortcut):
        p.append(("toy.teacher.shortcut", "the teacher has no shortcut habit (its corpus ignores it): leave it 0"))
    if not used:
        return
    if cuda_available is None:
        cuda_available = _cuda_available()
    for key, arch, model in used:
        h, n, kv = arch.hidden_size, arch.num_heads, arch.num_kv_heads
        if n < 1 or kv < 1 or h < 1 or arch.num_layers < 1 or arch.intermediate_size < 1:
            p.append((key, "hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size must be >= 1"))
            continue
        if h % n:
            p.append((f"{key}.hidden_size", f"must be divisible by {key}.num_heads ({n}), got {h}"))
        elif not cuda_available and h // n not in CPU_HEAD_DIMS:
            p.append((f"{key}.num_heads", f"head_dim = hidden_size / num_heads = {h // n} ({key}.hidden_size "
                      f"{h} / {key}.num_heads {n}) must be one of {CPU_HEAD_DIMS} for vLLM on CPU (no CUDA here)"))
        if n % kv:
            p.append((f"{key}.num_kv_heads", f"must divide {key}.num_heads ({n}), got {kv}"))
        if model.max_model_len > arch.max_position_embeddings:
            model_key = "student" if key == "toy.student" else "teacher.model"
            p.append((f"{key}.max_position_embeddings",
                      f"must be >= the model's max_model_len ({model_key}.max_model_len = {model.max_model_len})"))
        if arch.pretrain_steps < 0 or arch.pretrain_batch_size < 1 or arch.pretrain_lr <= 0:
            p.append((key, "pretrain_steps >= 0, pretrain_batch_size >= 1, pretrain_lr > 0"))


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _check_gpus(cfg: RunConfig, p: list, available_gpus: int | None) -> None:
    r, t, lr = cfg.rollout, cfg.teacher, cfg.learner
    if r.gpus_per_worker not in (0, r.tp):
        p.append(("rollout.gpus_per_worker", f"0 (CPU) or rollout.tp ({r.tp}), got {r.gpus_per_worker}"))
    if t.gpus_per_replica not in (0, t.tp):
        p.append(("teacher.gpus_per_replica", f"0 (CPU) or teacher.tp ({t.tp}), got {t.gpus_per_replica}"))
    if lr.gpus_per_rank not in (0, 1):
        p.append(("learner.gpus_per_rank", f"0 (CPU) or 1, got {lr.gpus_per_rank}"))
    rollout_gpus, learner_gpus = r.num_workers * r.gpus_per_worker, lr.num_ranks * lr.gpus_per_rank
    teacher_gpus = t.num_replicas * t.gpus_per_replica
    if r.colocate_with_learner and rollout_gpus != learner_gpus:
        p.append(("rollout.colocate_with_learner", f"colocated rollout and learner must use the same GPUs: "
                  f"rollout.num_workers × rollout.gpus_per_worker = {rollout_gpus}, "
                  f"learner.num_ranks × learner.gpus_per_rank = {learner_gpus}"))
    total = gpus_required(cfg)
    if available_gpus is not None and total > available_gpus:
        join = "shared with" if r.colocate_with_learner else "+"
        p.append(("rollout.num_workers", f"the layout asks for {total} GPUs but {available_gpus} are available: "
                  f"rollout.num_workers × rollout.gpus_per_worker ({rollout_gpus}) {join} "
                  f"learner.num_ranks × learner.gpus_per_rank ({learner_gpus}) + "
                  f"teacher.num_replicas × teacher.gpus_per_replica ({teacher_gpus})"))


def gpus_required(cfg: RunConfig) -> int:
    """GPUs the layout occupies (colocated rollout/learner counted once)."""
    r, t, lr = cfg.rollout, cfg.teacher, cfg.learner
    rollout_gpus, learner_gpus = r.num_workers * r.gpus_per_worker, lr.num_ranks * lr.gpus_per_rank
    student = max(rollout_gpus, learner_gpus) if r.colocate_with_learner else rollout_gpus + learner_gpus
    return student + t.num_replicas * t.gpus_per_replica


# ---------------------------------------------------------------------------------------------- CLI


def split_cli_args(items: Sequence[str]) -> tuple[str | None, list[str]]:
    """`[config.yaml] key.path=value ...` -> (config file or None, overrides): every entry point's rule."""
    items = list(items)
    path = items.pop(0) if items and "=" not in items[0] else None
    return path, items


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m zppo_ray.config", description="Print the resolved config.")
    parser.add_argument("items", nargs="*", help="[config.yaml] key.path=value ...")
    parser.add_argument("--available-gpus", type=int, default=None, help="also check the GPU layout fits")
    args = parser.parse_args(argv)
    path, items = split_cli_args(args.items)
    try:
        cfg = load_config(path, items, available_gpus=args.available_gpus)
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    from zppo_ray.redact import redact_text

    print(redact_text(to_yaml(cfg)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
