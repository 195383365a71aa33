"""Wiring: config -> Ray cluster -> actors -> the training loop -> the run directory.

`main.py` parses the command line; this module does the rest, in the order a reader expects:
resolve models and data, connect to Ray, start the roles, resume if asked, evaluate, train, checkpoint,
evaluate again, write the final artefacts.

Recovery (README "Recovery"): rollout workers and teacher replicas are replaced inside their pools
(zppo_ray/actors/replicas.py) and the buffer actor inside its client (zppo_ray/actors/buffer.py), without
the loop noticing. Two failures reach this module: a dead learner rank (`LearnerLost`: the group is rebuilt
and the run rolls back to the last checkpoint, `trainer.learner_restarts` times), and SIGTERM (the
preemption notice: the step in progress finishes, a checkpoint is written, the process exits with
`EXIT_PREEMPTED`; `trainer.resume=auto` continues from there).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import ray

from zppo_ray.actors import placement
from zppo_ray.algo.methods import method, needs_teacher
from zppo_ray.cli import EXIT_PREEMPTED
from zppo_ray.data.schema import Question
from zppo_ray.errors import LearnerLost, ModelError, Preempted
from zppo_ray.observe import progress, prometheus
from zppo_ray.observe.loggers import sinks_for
from zppo_ray.observe.runlog import RunLog, timed
from zppo_ray.roles import Roles
from zppo_ray.seeds import derive_seed
from zppo_ray.state import checkpoint as ckpt
from zppo_ray.state.ledger import Ledger
from zppo_ray.trainer import Trainer
from zppo_ray.weights import make_weight_sync
from zppo_ray.worlds import resolve_model

log = logging.getLogger("zppo_ray")

# ---------------------------------------------------------------------------------------- resolution

def model_paths(cfg, world) -> tuple[str, str]:
    """Student and teacher model directories (a world's aliases, `toy:student`, resolve to its models)."""
    return resolve_model(cfg.student.path, world), resolve_model(cfg.teacher.model.path, world)


def load_split(cfg, section: str, tokenizer, world=None) -> list[Question]:
    """The `data.train` / `data.eval` questions: a world's generated split or files."""
    from zppo_ray.data import ensure_unique_ids, load_questions

    out: list[Question] = []
    for src in getattr(cfg.data, section):
        if world is not None and src.path == world.name:
            qs = world.questions(src.split)
            out += qs[:src.limit] if src.limit else qs
        else:
            out += load_questions(src, tokenizer, cfg.data.on_bad_row, max_prompt_tokens=cfg.data.max_prompt_tokens)
    ensure_unique_ids(out)
    return out


def connect_ray(cfg) -> None:
    """Join `ray.address` / RAY_ADDRESS (e.g. under `ray job submit`), or start a local cluster."""
    if ray.is_initialized():  # a caller (a test, a notebook) already connected
        return
    term = signal.getsignal(signal.SIGTERM)  # ray.init replaces it with sys.exit; the entry point's stays (cli.py)
    try:
        _init_ray(cfg)
    except SystemExit as e:
        if e.code == signal.SIGTERM and callable(term):  # SIGTERM while Ray started: what the entry point asked for
            term(signal.SIGTERM, None)
        raise
    finally:
        if term is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, term)


def _init_ray(cfg) -> None:
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, namespace=cfg.ray.namespace, log_to_driver=True)
        log.info("joined Ray cluster at %s", address)
        return
    # On a small machine every role still reserves a logical CPU: ask for at least what they need
    # (Ray's CPUs are scheduling units; the OS shares the cores).
    need = (cfg.rollout.num_workers * cfg.rollout.cpus_per_worker
            + cfg.teacher.num_replicas * cfg.teacher.cpus_per_replica
            + cfg.learner.num_ranks * cfg.learner.cpus_per_rank + 1)
    num_cpus = cfg.ray.num_cpus or max(os.cpu_count() or 1, int(need + 0.999))
    extra = {"_metrics_export_port": int(cfg.metrics.port)} if cfg.metrics.prometheus else {}
    # address="local": always a new cluster (address=None would join any `ray start` cluster on the machine).
    # No dashboard (no job API) on a run's own cluster; Ray's metrics agent listens on all interfaces of the
    # node on its export port (Ray 2.60 offers no bind address for it): README "Security".
    ray.init(address="local", num_cpus=num_cpus, namespace=cfg.ray.namespace, include_dashboard=False,
             runtime_env={"env_vars": {k: v for k, v in os.environ.items()
                                       if k.startswith(("ZPPO_", "VLLM_", "DS_", "TORCH_EXTENSIONS"))}}, **extra)
    log.info("started a local Ray cluster with %d logical CPUs%s", num_cpus,
             f"; Prometheus metrics on port {cfg.metrics.port}" if extra else "")


def start_learner(cfg, student_path: str):
    from zppo_ray.actors.learner import LearnerGroup

    return LearnerGroup(student_path, cfg.learner, cfg.algo, seed=cfg.trainer.seed,
                        trust_remote_code=cfg.student.trust_remote_code, resources=dict(cfg.placement.learner),
                        strategy=cfg.placement.learner_strategy)


def start_buffer(cfg, run_dir: Path):
    """The buffer actor behind a client that rebuilds it from its live snapshot if it dies."""
    from zppo_ray.actors.buffer import BufferClient, ReplayBufferActor

    live = str(run_dir / "buffer_live")

    def start():
        # its own stream: sharing the trainer's seed would correlate replay draws with BCQ choices
        return ReplayBufferActor.options(resources=dict(cfg.placement.buffer)).remote(
            cfg.buffer, derive_seed(cfg.trainer.seed, "buffer"), live)

    def last_checkpoint_buffer() -> str | None:
        d = ckpt.latest(run_dir)
        return str(d / "buffer") if d else None

    return BufferClient(start, live, last_checkpoint_buffer)


def start_roles(cfg, student_path: str, teacher_path: str, run_dir: Path) -> Roles:
    from zppo_ray.actors.rollout import RolloutPool
    from zppo_ray.actors.teacher import TeacherGroup

    t = time.time()
    uses_teacher = cfg.teacher.num_replicas > 0 and needs_teacher(cfg.algo)
    with progress.bar(2 + uses_teacher + bool(cfg.algo.use_buffer), "starting roles", unit="role") as bar:
        bar.set_postfix_str("learner (DeepSpeed)")
        learner = start_learner(cfg, student_path)
        bar.update()
        bar.set_postfix_str("rollout (vLLM)")
        rollout = RolloutPool.create(cfg.rollout, cfg.student, model_path=student_path,
                                     resources=dict(cfg.placement.rollout))
        bar.update()
        teacher = None
        if uses_teacher:
            bar.set_postfix_str("teacher (vLLM)")
            teacher = TeacherGroup.create(cfg.teacher, model_path=teacher_path, templates=cfg.templates,
                                          resources=dict(cfg.placement.teacher))
            bar.update()
        buffer = start_buffer(cfg, run_dir) if cfg.algo.use_buffer else None
        bar.update(buffer is not None)
        weights = make_weight_sync(cfg.rollout, reload_replacements=cfg.trainer.max_staleness == 0)
        weights.init(learner, rollout)
    log.info("roles up in %.0fs: %d rollout worker(s), %s teacher replica(s), %d learner rank(s), buffer %s, "
             "weights by %s", time.time() - t, cfg.rollout.num_workers, cfg.teacher.num_replicas if teacher else 0,
             cfg.learner.num_ranks, "on" if buffer else "off", cfg.rollout.weight_sync)
    roles = Roles(rollout=rollout, learner=learner, weights=weights, teacher=teacher, buffer=buffer)
    placement.record(run_dir, roles, "start")
    return roles


# ---------------------------------------------------------------------------------------- checkpoints

def save_checkpoint(trainer: Trainer, roles: Roles, run_dir: Path, keep_last: int) -> Path:
    t0 = time.perf_counter()
    d = ckpt.checkpoint_dir(run_dir, trainer.step)
    d.mkdir(parents=True, exist_ok=True)
    ckpt.unmark_complete(d)  # a resumed run may save again at the step it resumed from: never torn yet COMPLETE
    try:
        roles.learner.save(str(d / "learner"))
        if roles.buffer is not None:
            roles.buffer.snapshot(str(d / "buffer"))
        trainer.ledger.save(d / "ledger.json")
        ckpt.write_trainer_state(d, trainer.state())
        ckpt.mark_complete(d)
    except BaseException:
        # Half a checkpoint is never resumed from (no COMPLETE) and, on a full disk, holds the space a retry needs.
        shutil.rmtree(d, ignore_errors=True)
        raise
    ckpt.prune(run_dir, keep_last)
    prometheus.record("zppo_checkpoint_seconds", time.perf_counter() - t0)
    log.info("checkpoint %s", d)
    return d


def resume(trainer: Trainer, roles: Roles, d: Path) -> None:
    """Restore learner, buffer and controller, then bring every rollout worker to the saved version
    before it serves (a restarted worker must never generate with stale weights)."""
    roles.learner.load(str(d / "learner"))
    if roles.buffer is not None:
        roles.buffer.restore(str(d / "buffer"))
    state = ckpt.read_trainer_state(d)
    trainer.load_state(state)
    trainer.ledger = Ledger(trainer.ledger.state.keys(), ckpt.read_ledger(d))
    roles.weights.push(state.version, rollback=True)
    log.info("resumed from %s at step %d (version %d, data cursor %d, epoch %d)", d, state.step,
             state.version, state.cursor, state.epoch)


# ---------------------------------------------------------------------------------------- the run

def train(cfg, run_dir: Path, world, on_start=None, roles: Roles | None = None) -> dict:
    """Load, connect, start the roles, then run (`_loop`). `on_start()` is called once the roles are up: from
    then on the run directory holds a run worth keeping, whatever happens next (zppo_ray/main.py).
    `roles`: actors the caller started and keeps (several runs on one set, as the test suite does); the run
    drives them as they are (weights, version, buffer) and leaves them running. A learner group rebuilt after a
    lost rank replaces `roles.learner` in that object, for the caller to stop with the rest."""
    from transformers import AutoTokenizer

    student_path, teacher_path = model_paths(cfg, world)
    tokenizer = AutoTokenizer.from_pretrained(cfg.student.tokenizer or student_path)
    if method(cfg.algo.name).step == "distill":
        check_shared_vocab(tokenizer, teacher_path)
    train_qs, eval_qs = load_split(cfg, "train", tokenizer, world), load_split(cfg, "eval", tokenizer, world)
    log.info("data: %d training questions, %d held-out", len(train_qs), len(eval_qs))

    t0 = time.perf_counter()
    connect_ray(cfg)
    owned = roles is None
    if owned:
        roles = start_roles(cfg, student_path, teacher_path, run_dir)
    phases = {"ray_and_roles": time.perf_counter() - t0}
    if on_start is not None:
        on_start()
    try:
        with PreemptionNotice() as preempt:
            return _train(cfg, run_dir, roles, train_qs, eval_qs, tokenizer, preempt,
                          lambda: start_learner(cfg, student_path), phases)
    finally:
        if owned:
            stop_roles(roles)


def recover_learner(trainer: Trainer, roles: Roles, run_dir: Path, err: LearnerLost, attempt: int, budget: int,
                    new_learner) -> int:
    """A learner rank died: rebuild the group and roll the whole run back to the last checkpoint (the
    optimizer state of the lost rank exists nowhere else). Returns the restarts spent: a new group that loses
    a rank before it has resumed (placed on a node whose loss Ray has not noticed yet) is one more. Raises
    when recovery is not possible."""
    d = ckpt.latest(run_dir)
    if d is None or attempt > budget or new_learner is None:
        why = ("no checkpoint to roll back to yet" if d is None else
               f"trainer.learner_restarts={budget} spent" if attempt > budget else "no way to start a learner")
        raise LearnerLost(f"{err}. The run stops ({why}); rerun with trainer.resume=auto to continue from "
                          f"{d or 'the start'}") from err
    log.error("%s; rebuilding the learner group and rolling back to %s (restart %d of %d)", err, d, attempt, budget)
    prometheus.record("zppo_actor_restarts", 1, role="learner")
    try:
        roles.weights.shutdown()
        roles.learner.shutdown()
    except Exception:  # noqa: BLE001 - the group is broken anyway
        log.exception("shutting down the broken learner group failed")
    try:
        roles.learner = new_learner()
        trainer.roles.learner = roles.learner
        roles.weights.init(roles.learner, roles.rollout)
        resume(trainer, roles, d)
    except LearnerLost as again:
        return recover_learner(trainer, roles, run_dir, again, attempt + 1, budget, new_learner)
    placement.record(run_dir, roles, "learner rebuilt")  # the group that resumed, not one that fell over
    return attempt


def check_shared_vocab(student_tokenizer, teacher_path: str) -> None:
    """The distillation baselines compare next-token distributions id by id: the teacher must read and
    score the student's token ids, so both models need the same vocabulary (true within a model family,
    e.g. Qwen3.5 0.8B and 27B; true for the toy models, which share one tokenizer)."""
    from transformers import AutoTokenizer

    teacher = AutoTokenizer.from_pretrained(teacher_path)
    if student_tokenizer.get_vocab() != teacher.get_vocab():
        raise ModelError(f"distillation needs the student and the teacher ({teacher_path}) to share one "
                         f"vocabulary; they differ ({len(student_tokenizer)} vs {len(teacher)} tokens): choose a "
                         "teacher of the student's family, or a method that is not a distillation")


def stop_roles(roles: Roles) -> None:
    for role in (roles.weights, roles.rollout, roles.teacher, roles.learner):
        if role is not None:
            try:
                role.shutdown()
            except Exception:  # noqa: BLE001 - shutting down must not hide the run's own error
                log.exception("shutting down %s failed", type(role).__name__)
    if roles.buffer is not None:
        ray.kill(roles.buffer.handle)


class PreemptionNotice:
    """While active, SIGTERM sets a flag instead of killing the process; the loop checks it after every
    step, checkpoints and stops. A second SIGTERM (or SIGINT) while the step finishes exits at once: the
    last periodic checkpoint still stands."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._old = signal.getsignal(signal.SIGTERM)

        def handler(signum, frame):
            if self.requested:
                log.error("second SIGTERM: exiting without a checkpoint")
                os._exit(EXIT_PREEMPTED)
            self.requested = True
            log.warning("SIGTERM: finishing the current step, then checkpointing and stopping")

        try:
            signal.signal(signal.SIGTERM, handler)
        except ValueError:  # not the main thread (e.g. a notebook worker): no handler, default behaviour
            self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)
        return False


def _train(cfg, run_dir: Path, roles: Roles, train_qs, eval_qs, tokenizer, preempt=None,
           new_learner=None, phases: dict | None = None) -> dict:
    run_log = RunLog(run_dir, cfg.metrics.jsonl, sinks_for(cfg, run_dir))
    trainer = None
    try:
        trainer = Trainer(cfg, roles, train_qs, eval_qs, tokenizer, run_log)
        return _loop(cfg, run_dir, roles, trainer, run_log, preempt, new_learner, dict(phases or {}))
    finally:
        if trainer is not None:
            trainer.close()  # a step produced ahead (asynchronous rollouts) ends before the roles stop
        run_log.close()  # idempotent; also flushes TensorBoard / W&B when the run stops on an error


def _loop(cfg, run_dir: Path, roles: Roles, trainer: Trainer, run_log: RunLog, preempt, new_learner,
          phases: dict) -> dict:
    """Resume, evaluate, train, evaluate, save; `phases` collects the seconds of each (summary.json)."""
    eval_qs = trainer.eval_questions
    start = ckpt.resolve_resume(cfg.trainer.resume, run_dir)
    if start is not None:
        with timed(lambda s: phases.update(resume=s)):
            resume(trainer, roles, start)

    before = None
    if trainer.step == 0 and eval_qs:
        with timed(lambda s: phases.update(eval_before=s)):
            before = trainer.evaluate("before")
    t0 = time.time()
    learner_restarts = 0
    steps = progress.bar(cfg.trainer.steps, "training", unit="step", initial=trainer.step)
    while trainer.step < cfg.trainer.steps:
        try:
            metrics = trainer.train_step()
        except LearnerLost as e:
            learner_restarts = recover_learner(trainer, roles, run_dir, e, learner_restarts + 1,
                                               cfg.trainer.learner_restarts, new_learner)
            steps.n = trainer.step
            continue
        steps.update(trainer.step - steps.n)
        steps.set_postfix(reward=f"{metrics['plain_reward']:.2f}", hard=metrics["n_hard"],
                          buffer=metrics["buffer_size"], refresh=False)
        trainer.print_step(metrics)
        if preempt is not None and preempt.requested:
            d = save_checkpoint(trainer, roles, run_dir, cfg.checkpoint.keep_last)
            run_log.write("preempted", step=trainer.step, checkpoint=str(d))
            raise Preempted(f"stopped by SIGTERM after step {trainer.step}; checkpoint {d}; rerun with "
                            "trainer.resume=auto to continue")
        last = trainer.step == cfg.trainer.steps
        if cfg.trainer.eval_every and trainer.step % cfg.trainer.eval_every == 0 and not last and eval_qs:
            trainer.evaluate(f"step {trainer.step}")
        if cfg.checkpoint.every and trainer.step % cfg.checkpoint.every == 0 and not last:
            save_checkpoint(trainer, roles, run_dir, cfg.checkpoint.keep_last)
    steps.close()
    train_s = phases["training"] = time.time() - t0  # periodic evaluations and checkpoints included
    with timed(lambda s: phases.update(eval_after=s)):
        after = trainer.evaluate("after") if eval_qs else None

    t_save = time.perf_counter()
    save_checkpoint(trainer, roles, run_dir, cfg.checkpoint.keep_last)
    roles.learner.save_hf(str(run_dir / "final"))
    phases["save"] = time.perf_counter() - t_save
    summary = {"steps": trainer.step, "train_seconds": round(train_s, 1), "eval_before": before,
               "eval_after": after, "final_model": str(run_dir / "final"),
               "phase_seconds": {k: round(v, 1) for k, v in phases.items()}}
    if roles.buffer is not None:
        roles.buffer.snapshot(str(run_dir / "buffer"))
        stats = roles.buffer.stats()
        fates = roles.buffer.fates()
        (run_dir / "buffer" / "fates.jsonl").write_text("".join(json.dumps(f) + "\n" for f in fates))
        summary["buffer"] = stats
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    run_log.write("summary", **summary)
    return summary
