"""Cross-field and range checks of a loaded config: every problem is collected, then one ConfigError."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

from zppo_ray.algo.methods import METHODS
from zppo_ray.algo.reformulate import check_templates
from zppo_ray.config.schema import CPU_HEAD_DIMS, ConfigError, RunConfig
from zppo_ray.worlds import WORLDS, is_world_alias, worlds_used

log = logging.getLogger(__name__)


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
    _check_loggers(cfg, p)
    p.extend((f"templates.{k}", m) for k, m in check_templates(cfg.templates))
    named = {k for k, _ in p}
    p.extend((f"buffer.{k}", m) for k, m in cfg.buffer.problems() if f"buffer.{k}" not in named)
    if check_paths and cfg.trainer.resume not in ("never", "auto"):
        if not _exists(cfg.trainer.resume):
            p.append(("trainer.resume", "'never', 'auto' or an existing checkpoint path; "
                      f"{cfg.trainer.resume!r} does not exist"))
    if p:
        raise ConfigError(p)


def _check_loggers(cfg: RunConfig, p: list) -> None:
    """A logger switched on needs its package: say so before any actor starts, not at the first step."""
    import importlib.util

    for key, module, install in (("tensorboard", "tensorboard", "tensorboard"), ("wandb", "wandb", "wandb")):
        if getattr(cfg.metrics, key) and importlib.util.find_spec(module) is None:
            p.append((f"metrics.{key}", f"needs the {module} package, which is not installed (pip install {install})"))


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


_UNIT = ["algo.rho_replay", "algo.rho_aug", "algo.prefix_alpha", "algo.jsd_beta"]
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
    "rollout.max_restarts", "teacher.max_restarts", "trainer.learner_restarts", "trainer.max_staleness",
    "rollout.omp_threads",
]
_POSITIVE = ["rollout.temperature", "learner.lr", "learner.eps", "algo.adv_eps", "teacher.request_timeout_s",
             "rollout.request_timeout_s", "rollout.weight_bucket_mb"]
# (0, 1]. The taus too: at 0 nothing is ever hard. algo.tau is checked itself, not only through buffer.tau
# (which follows it by interpolation): an error about buffer.tau alone would not name the key the user set.
_PROB = ["algo.tau", "buffer.tau", "rollout.top_p", "teacher.top_p", "eval.top_p", "rollout.gpu_memory_utilization",
         "teacher.gpu_memory_utilization", "buffer.ema_alpha"]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


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
    if a.dynamic_sampling_by != "group" and not a.dynamic_sampling:
        p.append(("algo.dynamic_sampling_by", f"{a.dynamic_sampling_by!r} needs algo.dynamic_sampling=true"))
    if a.dynamic_sampling and a.dynamic_sampling_by == "group" and (a.enable_bcq or a.enable_ncq):
        log.warning("algo.dynamic_sampling with BCQ/NCQ: spec §7 lists dynamic sampling as conflicting with ZPPO; "
                    "here it only drops all-equal groups from the loss (their advantage is 0; the remaining "
                    "tokens weigh more) after the hard questions went to the buffer and BCQ/NCQ. Use it as an "
                    "ablation only, or algo.dynamic_sampling_by=question (method zppo_ds)")
    if a.dynamic_sampling and m.step != "group":
        p.append(("algo.dynamic_sampling", f"filters reward groups; {a.name!r} has none"))
    if not m.builds_reformulations:  # its step builds no BCQ/NCQ: refuse the switches, never ignore them
        for key in ("enable_bcq", "enable_ncq"):
            if getattr(a, key):
                p.append((f"algo.{key}", f"{a.name!r} builds no BCQ/NCQ prompts; set it false or use a "
                          "zppo/grpo_* method"))
    if a.tis_cap != 0 and a.tis_cap < 1:
        p.append(("algo.tis_cap", f"0 (off) or >= 1 (a cap below 1 would shrink on-policy tokens), got {a.tis_cap}"))
    if cfg.trainer.max_staleness > 1:
        p.append(("trainer.max_staleness", f"0 or 1, got {cfg.trainer.max_staleness}: the controller produces one "
                  "step ahead (the buffer's refresh of step t must land before step t+2 draws), so samples are "
                  "never more than one version behind and a larger bound would change nothing"))
    if cfg.trainer.max_staleness > 0:
        if a.tis_cap == 0:
            p.append(("algo.tis_cap", "asynchronous rollouts (trainer.max_staleness >= 1) train on samples of an "
                      "older policy: set algo.tis_cap (e.g. 2) to correct for it"))
        if m.step != "group":
            p.append(("trainer.max_staleness", f"asynchronous rollouts apply to the group methods; {a.name!r} "
                      "has its own step shape: use 0"))
        if cfg.rollout.colocate_with_learner:
            p.append(("trainer.max_staleness", "colocated engines sleep while the learner trains, so nothing can "
                      "be sampled meanwhile: use 0 or rollout.colocate_with_learner=false"))
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
            if src.path in WORLDS and src.split not in ("train", "eval"):
                p.append((f"{key}.split", f"{src.path} sources need split 'train' or 'eval', got {src.split!r}"))
            local = src.path not in WORLDS and not src.path.startswith("hf:")
            if local and not src.path.endswith((".parquet", ".jsonl")) and Path(src.path).suffix:
                p.append((f"{key}.path", f"a world ({', '.join(WORLDS)}), 'hf:DIR', a .parquet/.jsonl file or a "
                          f"directory, got {src.path!r}"))
            if check_paths and (local or src.path.startswith("hf:")):
                target = src.path.removeprefix("hf:")
                if not _exists(target):
                    p.append((f"{key}.path", f"does not exist: {target}"))


def _check_toy_models(cfg: RunConfig, p: list, cuda_available: bool | None) -> None:
    used = [("toy.student", cfg.toy.student, cfg.student)] if cfg.student.path == "toy:student" else []
    if cfg.teacher.model.path == "toy:teacher" and cfg.teacher.num_replicas > 0:
        used.append(("toy.teacher", cfg.toy.teacher, cfg.teacher.model))
    for name, model_path in (("student.path", cfg.student.path), ("teacher.model.path", cfg.teacher.model.path)):
        world, _, role = model_path.partition(":")
        if is_world_alias(model_path) and role not in ("student", "teacher"):
            p.append((name, f"{world} models are '{world}:student' or '{world}:teacher', got {model_path!r}"))
    if len(worlds_used(cfg)) > 1:
        p.append(("student.path", f"a run uses one world; the models and data sources refer to {worlds_used(cfg)}"))
    _check_smollm2(cfg.smollm2, p)
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


def _check_smollm2(sm: Any, p: list) -> None:
    from zppo_ray.worlds.smollm2.task import COLUMNS

    if not 1 <= sm.tiers <= len(COLUMNS):
        p.append(("smollm2.tiers", f"digits per operand of the hardest tier, 1 to {len(COLUMNS)}, got {sm.tiers}"))
    if sm.n_train < 1 or sm.n_eval < 1:
        p.append(("smollm2", f"n_train and n_eval must be >= 1, got {sm.n_train} and {sm.n_eval}"))
    for role in ("student", "teacher"):
        m = getattr(sm, role)
        if m.steps < 0 or m.batch_size < 1 or m.lr <= 0 or m.examples_per_tier < 1:
            p.append((f"smollm2.{role}", "steps >= 0, batch_size >= 1, lr > 0, examples_per_tier >= 1"))
    if sm.teacher.steps == 0:
        p.append(("smollm2.teacher.steps", "the teacher is a fine-tune: steps >= 1"))


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
    _check_weight_sync(r, rollout_gpus, learner_gpus, p)
    _check_placement(cfg.placement, p)
    total = gpus_required(cfg)
    if available_gpus is not None and total > available_gpus:
        join = "shared with" if r.colocate_with_learner else "+"
        p.append(("rollout.num_workers", f"the layout asks for {total} GPUs but {available_gpus} are available: "
                  f"rollout.num_workers × rollout.gpus_per_worker ({rollout_gpus}) {join} "
                  f"learner.num_ranks × learner.gpus_per_rank ({learner_gpus}) + "
                  f"teacher.num_replicas × teacher.gpus_per_replica ({teacher_gpus})"))


def _check_weight_sync(r, rollout_gpus: int, learner_gpus: int, p: list) -> None:
    from zppo_ray.weights import WEIGHT_SYNCS

    if r.weight_sync not in WEIGHT_SYNCS:
        p.append(("rollout.weight_sync", f"one of {', '.join(WEIGHT_SYNCS)}, got {r.weight_sync!r}"))
    elif r.weight_sync != "object_store" and not (rollout_gpus and learner_gpus):
        p.append(("rollout.weight_sync", f"{r.weight_sync} moves weights between GPUs: it needs "
                  "rollout.gpus_per_worker and learner.gpus_per_rank > 0 (on CPU use object_store)"))
    elif r.weight_sync == "nccl" and r.colocate_with_learner:
        p.append(("rollout.weight_sync", "nccl cannot broadcast between processes on the same GPU: colocated "
                  "engines take ipc"))
    elif r.weight_sync == "ipc" and not r.colocate_with_learner:
        p.append(("rollout.weight_sync", "ipc shares GPU memory with colocated engines only: set "
                  "rollout.colocate_with_learner or use nccl"))


def _check_placement(pl, p: list) -> None:
    strategies = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
    if pl.learner_strategy not in strategies:
        p.append(("placement.learner_strategy", f"one of {', '.join(strategies)}, got {pl.learner_strategy!r}"))
    for role in ("rollout", "teacher", "learner", "buffer"):
        for name, amount in getattr(pl, role).items():
            if not amount > 0:
                p.append((f"placement.{role}.{name}", f"a resource amount > 0, got {amount}"))


def gpus_required(cfg: RunConfig) -> int:
    """GPUs the layout occupies (colocated rollout/learner counted once)."""
    r, t, lr = cfg.rollout, cfg.teacher, cfg.learner
    rollout_gpus, learner_gpus = r.num_workers * r.gpus_per_worker, lr.num_ranks * lr.gpus_per_rank
    student = max(rollout_gpus, learner_gpus) if r.colocate_with_learner else rollout_gpus + learner_gpus
    return student + t.num_replicas * t.gpus_per_replica


