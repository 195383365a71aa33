"""Prometheus metrics through Ray's metrics system, recorded by the process that owns each number.

Every metric is declared once in CATALOG (name, type, help text with its unit, labels, buckets) and
created lazily in the process that first records it, with `ray.util.metrics`. Ray serves them on each
node's metrics export port (`ray start --metrics-export-port`, the port KubeRay's PodMonitor scrapes) with
a `ray_` prefix: `zppo_buffer_size` is scraped as `ray_zppo_buffer_size`, and a counter `zppo_x` as
`ray_zppo_x_total`. Who records what:

- the replay-buffer actor: buffer size, admissions / graduations / evictions by entry-accuracy bin,
  visits and steps in the buffer of every question that leaves, the age of the oldest entry;
- each rollout worker: requests, generated tokens, tokens/s, latency, its policy version;
- each teacher replica: calls and latency per operation, compression lengths;
- the controller (driver): per-step numbers that exist only there: step time and its breakdown,
  weight-push seconds and bytes, checkpoint seconds, learner loss / clip fractions / grad norm /
  entropy / tokens / positive-advantage fraction, BCQ and NCQ built, their accuracy and batch share,
  the teacher's solve rate on hard questions; the question ledger by state; failures, retries, restarts
  and replica health of every role.

Outside a Ray worker (unit tests, the pure core) every call is a no-op, so nothing here needs a cluster.
The same numbers also go to the run's metrics.jsonl (zppo_ray/observe/runlog.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# Second-scale latencies from a few ms (a CPU toy generate) to minutes (a 27B teacher on long answers).
SECONDS_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
COUNT_BUCKETS = (1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 50, 100)
TOKEN_BUCKETS = (8, 16, 32, 64, 128, 256, 512, 1024, 2048)


@dataclass(frozen=True)
class Spec:
    kind: str  # "counter" | "gauge" | "histogram"
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


CATALOG: dict[str, Spec] = {
    # buffer (replay-buffer actor)
    "zppo_buffer_size": Spec("gauge", "Questions in the replay buffer (count)."),
    "zppo_buffer_admissions": Spec("counter", "Hard questions admitted to the buffer (count), by entry-accuracy "
                                              "bin (correct rollouts of G_S, e.g. 0/8).", ("entry_bin",)),
    "zppo_buffer_graduations": Spec("counter", "Questions that left the buffer by reaching accuracy >= tau (count), "
                                               "by entry-accuracy bin.", ("entry_bin",)),
    "zppo_buffer_evictions": Spec("counter", "Questions evicted from the buffer (capacity or max visits) "
                                             "(count), by entry-accuracy bin.", ("entry_bin",)),
    "zppo_buffer_visits_before_leaving": Spec("histogram", "Replay visits of a question before it left the "
                                                           "buffer (count), by fate.", ("fate",), COUNT_BUCKETS),
    "zppo_buffer_steps_in_buffer": Spec("histogram", "Training steps a question spent in the buffer before "
                                                     "leaving (steps), by fate.", ("fate",), COUNT_BUCKETS),
    "zppo_buffer_oldest_age_steps": Spec("gauge", "Age of the oldest buffered question (steps)."),
    # rollout (each worker)
    "zppo_rollout_requests": Spec("counter", "Generation requests served (count).", ("worker",)),
    "zppo_rollout_tokens": Spec("counter", "Completion tokens generated (tokens).", ("worker",)),
    "zppo_rollout_tokens_per_second": Spec("gauge", "Completion tokens per second of the last call (tokens/s).",
                                           ("worker",)),
    "zppo_rollout_latency_seconds": Spec("histogram", "Duration of one generate call (seconds).", ("worker",),
                                         SECONDS_BUCKETS),
    "zppo_rollout_policy_version": Spec("gauge", "Policy version the worker serves (version).", ("worker",)),
    # teacher (each replica)
    "zppo_teacher_calls": Spec("counter", "Teacher calls (count), by operation.", ("op", "replica")),
    "zppo_teacher_latency_seconds": Spec("histogram", "Duration of one teacher call (seconds), by operation.",
                                         ("op", "replica"), SECONDS_BUCKETS),
    "zppo_teacher_compression_tokens": Spec("histogram", "Length of a compressed candidate (tokens).",
                                            ("replica",), TOKEN_BUCKETS),
    # controller
    "zppo_teacher_solve_rate": Spec("gauge", "Share of this step's hard questions with >= 1 correct teacher "
                                             "sample (ratio 0-1)."),
    "zppo_reform_built": Spec("counter", "Reformulated groups built (count), by kind (bcq, ncq, hint, prefix).",
                              ("kind",)),
    "zppo_reform_accuracy": Spec("gauge", "Mean rollout accuracy of this step's reformulated groups (ratio 0-1), "
                                          "by kind.", ("kind",)),
    "zppo_reform_batch_share": Spec("gauge", "Share of this step's training rollouts that come from reformulated "
                                             "groups (ratio 0-1)."),
    "zppo_plain_reward": Spec("gauge", "Mean reward of this step's plain rollouts (ratio 0-1)."),
    "zppo_learner_loss": Spec("gauge", "Policy (or distillation) loss, mean over the step's updates."),
    "zppo_learner_clip_fraction": Spec("gauge", "Share of loss tokens whose ratio was clipped (ratio 0-1), by "
                                                "side (low, high, dual).", ("side",)),
    "zppo_learner_grad_norm": Spec("gauge", "Gradient norm before clipping, mean over the step's updates."),
    "zppo_learner_entropy": Spec("gauge", "Mean token entropy of the policy on the step's rollouts (nats)."),
    "zppo_learner_positive_advantage_fraction": Spec("gauge", "Share of training rollouts with a positive "
                                                              "advantage (ratio 0-1)."),
    "zppo_learner_tokens": Spec("counter", "Loss tokens trained on (tokens)."),
    "zppo_step_seconds": Spec("gauge", "Duration of the last step (seconds), by phase (total, generate, grade, "
                                       "teacher, compress, learn, push, buffer, idle), and how long each role "
                                       "sat idle during it (idle_rollout, idle_teacher, idle_learner).", ("phase",)),
    "zppo_rollout_mismatch_kl": Spec("gauge", "KL(rollout engine || learner at step start) on the step's own "
                                              "sampled tokens (k3 estimate, nats): staleness or numeric drift."),
    "zppo_tis_truncated_fraction": Spec("gauge", "Share of the step's sampled tokens whose importance weight hit "
                                                 "algo.tis_cap (ratio 0-1)."),
    "zppo_sample_age_versions": Spec("gauge", "Mean policy versions between the step's samples and the learner."),
    "zppo_steps": Spec("counter", "Training steps completed (count)."),
    "zppo_weight_push_seconds": Spec("gauge", "Duration of the last weight push to every rollout worker (seconds)."),
    "zppo_weight_push_bytes": Spec("gauge", "Size of the last weight push (bytes)."),
    "zppo_checkpoint_seconds": Spec("gauge", "Duration of the last checkpoint (seconds)."),
    # recovery and accounting (controller; README "Recovery")
    "zppo_questions": Spec("gauge", "Training questions by state (count): not_served, in_flight, trained, "
                                    "in_buffer, graduated, evicted, skipped; they sum to the training set.",
                           ("state",)),
    "zppo_questions_skipped": Spec("counter", "Questions skipped because their input could not be processed "
                                              "after a retry (count), by where.", ("reason",)),
    "zppo_actor_failures": Spec("counter", "Failed actor calls (count), by role and kind (infra, data, timeout).",
                                ("role", "kind")),
    "zppo_actor_restarts": Spec("counter", "Actors replaced after a failure (count), by role (rollout, teacher, "
                                           "buffer, learner).", ("role",)),
    "zppo_requests_retried": Spec("counter", "Requests sent again to another replica after a failure (count).",
                                  ("role",)),
    "zppo_replicas": Spec("gauge", "Engine replicas by health state (count): healthy, suspect, dead, "
                                   "restarting, stale.", ("role", "state")),
    "zppo_buffer_lost_refreshes": Spec("counter", "Buffer refreshes lost when the buffer actor was rebuilt from "
                                                  "an older snapshot (count; 0 unless its live snapshot was "
                                                  "unreadable)."),
}

_made: dict[str, Any] = {}


def _active() -> bool:
    try:
        import ray

        return ray.is_initialized()
    except ImportError:  # the pure core can run without Ray installed
        return False


def _metric(name: str):
    m = _made.get(name)
    if m is None:
        from ray.util import metrics

        spec = CATALOG[name]
        cls = {"counter": metrics.Counter, "gauge": metrics.Gauge, "histogram": metrics.Histogram}[spec.kind]
        kwargs: dict[str, Any] = {"description": spec.help, "tag_keys": spec.labels}
        if spec.kind == "histogram":
            kwargs["boundaries"] = list(spec.buckets)
        m = _made[name] = cls(name, **kwargs)
    return m


def record(name: str, value: float, **labels: str) -> None:
    """Set a gauge, add to a counter or observe a histogram value; a no-op outside Ray. Telemetry must
    never break training: a failure is logged once per metric and otherwise ignored."""
    spec = CATALOG[name]  # an unknown name is a programming error: raise
    if set(labels) != set(spec.labels):
        raise ValueError(f"{name} takes labels {spec.labels}, got {tuple(labels)}")
    if not _active():
        return
    try:
        m = _metric(name)
        tags = {k: str(v) for k, v in labels.items()} or None
        if spec.kind == "counter":
            if value > 0:
                m.inc(value, tags=tags)
        elif spec.kind == "gauge":
            m.set(value, tags=tags)
        else:
            m.observe(value, tags=tags)
    except Exception:  # noqa: BLE001 - see docstring
        if name not in _failed:
            _failed.add(name)
            log.exception("recording metric %s failed; it is skipped from now on", name)


_failed: set[str] = set()


def entry_bin(accuracy: float, group_size: int) -> str:
    """The entry-accuracy bin label of a question: correct rollouts out of G_S, e.g. "1/8"."""
    return f"{round(accuracy * group_size)}/{group_size}"


# --------------------------------------------------------------------------------- per-role helpers

def record_buffer_refresh(refresh: dict, admitted_accuracies: list[float], group_size: int,
                          oldest_age: int | None) -> None:
    """Replay-buffer actor, after each refresh."""
    record("zppo_buffer_size", refresh["size"])
    for acc in admitted_accuracies:
        record("zppo_buffer_admissions", 1, entry_bin=entry_bin(acc, group_size))
    for f in refresh["fates"]:
        name = "zppo_buffer_graduations" if f["fate"] == "graduated" else "zppo_buffer_evictions"
        record(name, 1, entry_bin=entry_bin(f["entry_accuracy"], group_size))
        record("zppo_buffer_visits_before_leaving", f["visits"], fate=f["fate"])
        record("zppo_buffer_steps_in_buffer", f["steps_in_buffer"], fate=f["fate"])
    record("zppo_buffer_oldest_age_steps", oldest_age or 0)


def record_generate(worker: str, n_requests: int, n_tokens: int, seconds: float, version: int) -> None:
    """Rollout worker, after each generate call."""
    record("zppo_rollout_requests", n_requests, worker=worker)
    record("zppo_rollout_tokens", n_tokens, worker=worker)
    record("zppo_rollout_latency_seconds", seconds, worker=worker)
    if seconds > 0:
        record("zppo_rollout_tokens_per_second", n_tokens / seconds, worker=worker)
    record("zppo_rollout_policy_version", version, worker=worker)


def record_teacher_call(op: str, replica: str, seconds: float) -> None:
    record("zppo_teacher_calls", 1, op=op, replica=replica)
    record("zppo_teacher_latency_seconds", seconds, op=op, replica=replica)


def record_step(m: dict, push_bytes: int) -> None:
    """Controller, after each step, from the same dict that goes to metrics.jsonl."""
    record("zppo_steps", 1)
    for phase, s in m["time"].items():
        record("zppo_step_seconds", s, phase=phase)
    record("zppo_plain_reward", m["plain_reward"])
    if m.get("n_hard"):
        record("zppo_teacher_solve_rate", m["teacher_solved"] / m["n_hard"])
    for kind in ("bcq", "ncq", "hint", "prefix"):
        n = m.get(f"n_{kind}", 0)
        record("zppo_reform_built", n, kind=kind)
        if n:
            record("zppo_reform_accuracy", m[f"{kind}_reward"], kind=kind)
    record("zppo_reform_batch_share", m.get("reform_share", 0.0))
    learn = m.get("learn") or {}
    if learn.get("tokens"):  # a step without an update (no loss tokens) records no learner gauges
        record("zppo_learner_loss", learn.get("loss", 0.0))
        record("zppo_learner_grad_norm", learn.get("grad_norm", 0.0))
        record("zppo_learner_entropy", learn.get("entropy", 0.0))
        record("zppo_learner_tokens", learn.get("tokens", 0.0))
        for name, key in (("zppo_rollout_mismatch_kl", "rollout_kl"), ("zppo_tis_truncated_fraction",
                                                                        "tis_truncated_frac"),
                          ("zppo_sample_age_versions", "sample_age_mean")):
            if key in learn:
                record(name, learn[key])
        for side, key in (("low", "clipfrac_low"), ("high", "clipfrac_high"), ("dual", "dualclip_frac")):
            if key in learn:
                record("zppo_learner_clip_fraction", learn[key], side=side)
        record("zppo_weight_push_seconds", m.get("push_seconds", 0.0))
        record("zppo_weight_push_bytes", push_bytes)
    if "pos_adv_frac" in m:
        record("zppo_learner_positive_advantage_fraction", m["pos_adv_frac"])
