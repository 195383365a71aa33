"""The frozen teacher as a service group: `TeacherReplica` (one vLLM engine in a Ray actor) × M.

Verbs (docs/design.md, spec §3-§5): `generate` (BCQ positives, hints, prefixes), `compress` (candidate
summaries), `judge` (free-form rewards), `score_topk` (top-k logprobs for on-policy distillation).

Why a group with deadlines: teacher work is overlapped with student work (the controller holds a
`TeacherCall` and collects it later), and a stuck replica must surface as a clear `TeacherTimeout` naming
the verb and the replica rather than hanging the step.

Failures (`zppo_ray.actors.replicas`): a timed-out replica becomes suspect and its items go to the other
replicas (it gets work again only after it answers a health probe); a replica that dies has its items
re-sent and is replaced in the background (`teacher.max_restarts` per slot). The teacher is frozen, so a
replacement serves as soon as its engine is up. TeacherTimeout is raised only when no other replica can
take the late items or their retry budget is spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable

import ray

from zppo_ray import telemetry
from zppo_ray.actors.replicas import SKIPPED, Gather, ReplicaSet
from zppo_ray.actors.rollout import _EngineActor, actor_options, engine_kwargs, gpu_tp_engine_kwargs
from zppo_ray.errors import boundary
from zppo_ray.algo.reformulate import build_compression_prompt, build_judge_prompt, truncate_candidate
from zppo_ray.metrics import timed
from zppo_ray.rewards import grade_judged, last_boxed
from zppo_ray.types import GenRequest, Sample


# What a skipped item becomes: no teacher samples, or a judge verdict of wrong (spec §4: malformed = wrong).
SKIPPED_AS = {"generate": [], "judge": 0.0}


class TeacherTimeout(TimeoutError):
    """A teacher call did not finish within `request_timeout_s`."""

    def __init__(self, verb: str, replicas: list[str], timeout_s: float):
        self.verb, self.replicas, self.timeout_s = verb, replicas, timeout_s
        super().__init__(f"teacher {verb!r} timed out after {timeout_s:g}s on replica(s) {', '.join(replicas)}")


def summary_rejection(summary: str, candidate: str) -> str | None:
    """Why a teacher summary of `candidate` must not be used (None = use it): "empty", "no_boxed" (spec §3
    wants the final answer in \\boxed{}), or "answer_changed" (the summary's final answer differs from
    the candidate's, or the candidate had none: a BCQ pair would no longer hold exactly one correct
    candidate, an NCQ block could smuggle in an answer that is not known to be wrong)."""
    if not summary.strip():
        return "empty"
    answer = last_boxed(summary)
    if answer is None:
        return "no_boxed"
    original = last_boxed(candidate)
    if original is None or answer.strip() != original.strip():
        return "answer_changed"  # includes inventing an answer the candidate never gave (NCQ safety)
    return None


@ray.remote
class TeacherReplica(_EngineActor):
    """One teacher engine. Deterministic verbs (compress, judge) decode at temperature 0."""

    def __init__(self, model_path: str, engine_kwargs: dict, name: str = "teacher",
                 judge_max_tokens: int = 512):
        super().__init__(model_path, engine_kwargs, name)
        self.judge_max_tokens = judge_max_tokens
        self.counters = {"compress_calls": 0, "compress_items": 0, "compress_fallbacks": 0,
                         "compress_answer_changed": 0, "judge_items": 0, "judge_too_long": 0}

    def _timed(self, op: str):
        return timed(lambda s: telemetry.record_teacher_call(op, self.name, s))

    @boundary("teacher")
    def generate(self, requests: list[GenRequest], sampling: dict) -> list[list[Sample]]:
        with self._timed("generate"):
            return self._generate(requests, sampling)

    @boundary("teacher")
    def compress(self, items: list[tuple[str, str]], max_tokens: int, max_lines: int) -> list[str]:
        with self._timed("compress"):
            out = self._compress(items, max_tokens, max_lines)
        for text in out:
            telemetry.record("zppo_teacher_compression_tokens",
                             len(self.engine.tokenizer(text, add_special_tokens=False)["input_ids"]), replica=self.name)
        return out

    def _compress(self, items: list[tuple[str, str]], max_tokens: int, max_lines: int) -> list[str]:
        """Summaries of (question_text, candidate) pairs, at most `max_lines` lines and `max_tokens` tokens.

        Falls back to `truncate_candidate` of the original (same caps), counted in `stats()`, when the
        teacher's summary is empty or has no `\\boxed{}` answer, when it changed the candidate's final
        answer (a BCQ pair must keep one correct and one wrong candidate; spec §3 "add nothing new"), or
        when the prompt does not fit the engine.
        """
        self.counters["compress_calls"] += 1
        self.counters["compress_items"] += len(items)
        prompts = [build_compression_prompt(q, c) for q, c in items]
        fits = [len(self.engine.prompt_ids(p)) < self.engine.max_model_len - 1 for p in prompts]
        reqs = [GenRequest(prompt=p, n=1, tag=f"compress:{i}") for i, (p, ok) in enumerate(zip(prompts, fits)) if ok]
        outs = iter(self._generate(reqs, dict(temperature=0.0, max_tokens=max_tokens, logprobs=False)))
        results = []
        for (_, candidate), ok in zip(items, fits):
            summary = self._cap(next(outs)[0].text, max_tokens, max_lines) if ok else ""
            reason = summary_rejection(summary, candidate)
            if reason is not None:
                self.counters["compress_fallbacks"] += 1
                self.counters["compress_answer_changed"] += int(reason == "answer_changed")
                summary = self._cap(candidate, max_tokens, max_lines)
            results.append(summary)
        return results

    def _cap(self, text: str, max_tokens: int, max_lines: int) -> str:
        text = truncate_candidate(text, max_chars=len(text), max_lines=max_lines)
        ids = self.engine.tokenizer(text, add_special_tokens=False)["input_ids"]
        return text if len(ids) <= max_tokens else self.engine.tokenizer.decode(ids[:max_tokens]).strip()

    @boundary("teacher")
    def judge(self, items: list[tuple[str, str, str]]) -> list[float]:
        """1.0 / 0.0 per (question, gold, response): strict JSON verdict, anything malformed is wrong."""
        with self._timed("judge"):
            return self._judge(items)

    def _judge(self, items: list[tuple[str, str, str]]) -> list[float]:
        self.counters["judge_items"] += len(items)
        prompts = [build_judge_prompt(q, g, r) for q, g, r in items]
        fits = [len(self.engine.prompt_ids(p)) < self.engine.max_model_len - 1 for p in prompts]
        self.counters["judge_too_long"] += fits.count(False)
        reqs = [GenRequest(prompt=p, n=1, tag=f"judge:{i}") for i, (p, ok) in enumerate(zip(prompts, fits)) if ok]
        outs = iter(self._generate(reqs, dict(temperature=0.0, max_tokens=self.judge_max_tokens, logprobs=False)))
        return [grade_judged(next(outs)[0].text) if ok else 0.0 for ok in fits]

    @boundary("teacher")
    def score_topk(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], k: int) -> list[dict]:
        with self._timed("score_topk"):
            return self.engine.score_topk(prompt_ids, completion_ids, k)

    def stats(self) -> dict:
        return dict(self.counters)


@dataclass
class TeacherCall:
    """A dispatched teacher call: `TeacherGroup.result(call)` gathers it (retrying what failed)."""

    gather: Gather

    def refs(self) -> list:
        return self.gather.refs()

    def ready(self) -> bool:
        """True when every part finished (non-blocking), so the controller can poll between student work."""
        refs = self.refs()
        return not refs or len(ray.wait(refs, num_returns=len(refs), timeout=0)[0]) == len(refs)


class TeacherGroup:
    """M teacher replicas; each call's items are split evenly across serving replicas and gathered in order."""

    def __init__(self, replicas: Sequence[Any], request_timeout_s: float, names: Sequence[str] | None = None,
                 placement_groups: Sequence[Any] = (), factory=None, max_restarts: int = 0):
        if not replicas:
            raise ValueError("a TeacherGroup needs at least one replica (teacher.num_replicas >= 1)")
        names = list(names) if names else [f"teacher-{i}" for i in range(len(replicas))]
        self.replicas = ReplicaSet("teacher", replicas, names, factory, max_restarts, needs_weights=False,
                                   placement_groups=placement_groups)
        self.request_timeout_s = float(request_timeout_s)

    @classmethod
    def create(cls, teacher_cfg: Any, model_path: str | None = None) -> TeacherGroup:
        path = model_path or teacher_cfg.model.path
        if str(path).startswith("toy:"):
            raise ValueError(f"model path {path!r} is a toy alias: pass the bootstrapped directory as model_path")

        def start(i: int) -> tuple[Any, Any]:
            opts, pg = actor_options(teacher_cfg.cpus_per_replica, teacher_cfg.gpus_per_replica, teacher_cfg.tp)
            kw = engine_kwargs(teacher_cfg.model, tp=teacher_cfg.tp, seed=teacher_cfg.seed + i,
                               kv_cache_gib=teacher_cfg.kv_cache_gib,
                               gpu_memory_utilization=teacher_cfg.gpu_memory_utilization,
                               max_logprobs=max(20, teacher_cfg.topk_logprobs),
                               **gpu_tp_engine_kwargs(teacher_cfg.gpus_per_replica, teacher_cfg.tp))
            return TeacherReplica.options(**opts).remote(str(path), kw, f"teacher-{i}", teacher_cfg.judge_max_tokens), pg

        started = [start(i) for i in range(teacher_cfg.num_replicas)]
        group = cls([h for h, _ in started], teacher_cfg.request_timeout_s, placement_groups=[p for _, p in started],
                    factory=start, max_restarts=teacher_cfg.max_restarts)
        ray.get([h.version.remote() for h, _ in started])  # engines up (start errors surface here)
        return group

    @property
    def names(self) -> list[str]:
        return self.replicas.names

    # ------------------------------------------------------------------------------------ dispatch/gather

    def _dispatch(self, verb: str, items: Sequence[Any], weights: Sequence[int],
                  call: Callable[[Any, list, list[int]], Any]) -> TeacherCall:
        """Split items over serving replicas (balanced by weight); `call(replica, chunk, indices)` returns a ref."""
        return TeacherCall(self.replicas.dispatch(verb, items, weights, call, self.request_timeout_s))

    def result(self, call: TeacherCall) -> list:
        """Gather a call's per-item results in item order; TeacherTimeout when late items cannot be retried.
        A skipped item (its input failed twice) comes back as None: generate -> [], judge -> 0.0 (wrong)."""
        verb, timeout = call.gather.verb, self.request_timeout_s
        out = self.replicas.gather(call.gather, on_timeout=lambda names: TeacherTimeout(verb, names, timeout))
        if not call.gather.skipped:
            return out
        if verb not in SKIPPED_AS:  # compress / score_topk have no neutral answer: the caller must know
            raise ValueError(f"teacher {verb!r}: item(s) could not be processed: {call.gather.skipped}")
        return [SKIPPED_AS[verb] if r is SKIPPED else r for r in out]
    # ------------------------------------------------------------------------------------ verbs (async)

    def generate_async(self, requests: Sequence[GenRequest], sampling: dict) -> TeacherCall:
        """Dispatch now, gather later with `result(call)`; the controller keeps the student busy meanwhile."""
        seed = sampling.get("seed")

        def call(rep: Any, chunk: list, idx: list[int]) -> Any:  # seeds follow the request, not the split
            return rep.generate.remote(chunk, dict(sampling, seed=[seed + i for i in idx])
                                       if isinstance(seed, int) else sampling)

        return self._dispatch("generate", requests, [r.n for r in requests], call)

    def compress_async(self, items: Sequence[tuple[str, str]], max_tokens: int, max_lines: int) -> TeacherCall:
        return self._dispatch("compress", items, [1] * len(items),
                              lambda rep, chunk, _: rep.compress.remote(chunk, max_tokens, max_lines))

    def judge_async(self, items: Sequence[tuple[str, str, str]]) -> TeacherCall:
        return self._dispatch("judge", items, [1] * len(items), lambda rep, chunk, _: rep.judge.remote(chunk))

    def score_topk_async(self, prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]],
                         k: int) -> TeacherCall:
        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
        pairs = list(zip(prompt_ids, completion_ids))
        return self._dispatch("score_topk", pairs, [len(p) + len(c) for p, c in pairs],
                              lambda rep, chunk, idx: rep.score_topk.remote([p for p, _ in chunk],
                                                                             [c for _, c in chunk], k))

    # ------------------------------------------------------------------------------------ verbs (blocking)

    def generate(self, requests: Sequence[GenRequest], sampling: dict) -> list[list[Sample]]:
        return self.result(self.generate_async(requests, sampling))

    def compress(self, items: Sequence[tuple[str, str]], max_tokens: int, max_lines: int) -> list[str]:
        return self.result(self.compress_async(items, max_tokens, max_lines))

    def judge(self, items: Sequence[tuple[str, str, str]]) -> list[float]:
        return self.result(self.judge_async(items))

    def score_topk(self, prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]], k: int) -> list[dict]:
        return self.result(self.score_topk_async(prompt_ids, completion_ids, k))

    # ------------------------------------------------------------------------------------ housekeeping

    def stats(self) -> dict:
        """Counters summed over serving replicas (e.g. compress_fallbacks; a replaced replica starts at 0)."""
        total: dict = {}
        handles = [self.replicas.handles[i] for i in self.replicas.serving()]
        for s in ray.get([h.stats.remote() for h in handles], timeout=self.request_timeout_s):
            for k, v in s.items():
                total[k] = total.get(k, 0) + v
        return total

    def health(self) -> list[dict]:
        return self.replicas.health()

    def shutdown(self, grace_s: float = 30.0) -> None:
        """Stop the engines cleanly (bounded by grace_s: a replica busy with a timed-out call is killed)."""
        self.replicas.shutdown(grace_s)
