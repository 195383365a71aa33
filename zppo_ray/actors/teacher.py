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

from zppo_ray import sampling
from zppo_ray.actors.engine_actor import EngineActor, actor_options, engine_kwargs, tp_engine_kwargs
from zppo_ray.actors.replicas import SKIPPED, Gather, ReplicaSet
from zppo_ray.algo.compression import cap_candidate, summary_rejection
from zppo_ray.algo.reformulate import Templates, build_compression_prompt, build_judge_prompt, summary_of
from zppo_ray.errors import boundary
from zppo_ray.observe import prometheus
from zppo_ray.observe.runlog import timed
from zppo_ray.rewards import grade_judged
from zppo_ray.seeds import seeds_for_part
from zppo_ray.types import GenRequest, Sample
from zppo_ray.worlds import is_world_alias

# What a skipped item becomes: no teacher samples, a judge verdict of wrong (spec §4: malformed = wrong), or
# no summary (the controller then shows that instance's candidates raw-truncated).
SKIPPED_AS = {"generate": [], "judge": 0.0, "compress": None}


class TeacherTimeout(TimeoutError):
    """A teacher call did not finish within `request_timeout_s`."""

    def __init__(self, verb: str, replicas: list[str], timeout_s: float):
        self.verb, self.replicas, self.timeout_s = verb, replicas, timeout_s
        super().__init__(f"teacher {verb!r} timed out after {timeout_s:g}s on replica(s) {', '.join(replicas)}")


@ray.remote
class TeacherReplica(EngineActor):
    """One teacher engine. Deterministic verbs (compress, judge) decode at temperature 0."""

    def __init__(self, model_path: str, engine_kwargs: dict, name: str = "teacher",
                 judge_max_tokens: int = 512, templates: Templates | None = None):
        super().__init__(model_path, engine_kwargs, name)
        self.judge_max_tokens = judge_max_tokens
        self.templates = templates or Templates()
        self.counters = {"compress_calls": 0, "compress_items": 0, "compress_fallbacks": 0,
                         "compress_answer_changed": 0, "judge_items": 0, "judge_too_long": 0}

    def _timed(self, op: str):
        return timed(lambda s: prometheus.record_teacher_call(op, self.name, s))

    @boundary("teacher")
    def generate(self, requests: list[GenRequest], sampling: dict) -> list[list[Sample]]:
        with self._timed("generate"):
            return self._generate(requests, sampling)

    @boundary("teacher")
    def compress(self, items: list[str], max_tokens: int, max_lines: int) -> list[str | None]:
        with self._timed("compress"):
            out = self._compress(items, max_tokens, max_lines)
        for text in out:
            if text is not None:
                prometheus.record("zppo_teacher_compression_tokens", len(self._encode(text)), replica=self.name)
        return out

    def _encode(self, text: str) -> list[int]:
        return self.engine.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _compress(self, candidates: list[str], max_tokens: int, max_lines: int) -> list[str | None]:
        """The teacher's summary of each candidate (spec §3, §9), capped at `max_lines` lines and `max_tokens`
        tokens, or None where it must not be used (`zppo_ray.algo.compression.summary_rejection`, checked
        on the whole summary before the caps; or a prompt that does not fit the engine). None is counted in
        `stats()`; the controller then shows the whole instance raw-truncated, so both candidates of a BCQ
        always have the same form. Thinking is off where the chat template has the switch, so the token cap
        is not spent inside <think>."""
        self.counters["compress_calls"] += 1
        self.counters["compress_items"] += len(candidates)
        prompts = [build_compression_prompt(c, self.templates) for c in candidates]
        fits = [len(self.engine.prompt_ids(p, thinking=False)) < self.engine.max_model_len - 1 for p in prompts]
        reqs = [GenRequest(prompt=p, n=1, tag=f"compress:{i}", thinking=False)
                for i, (p, ok) in enumerate(zip(prompts, fits)) if ok]
        outs = iter(self._generate(reqs, sampling.greedy(max_tokens)))
        results: list[str | None] = []
        for candidate, ok in zip(candidates, fits):
            summary = summary_of(next(outs)[0].text, self.templates) if ok else ""
            reason = summary_rejection(summary, candidate)
            if reason is not None:
                self.counters["compress_fallbacks"] += 1
                self.counters["compress_answer_changed"] += int(reason in ("answer_changed", "answer_added"))
                results.append(None)
                continue
            results.append(cap_candidate(summary, max_lines, max_tokens, self._encode, self.engine.tokenizer.decode))
        return results

    @boundary("teacher")
    def judge(self, items: list[tuple[str, str, str]]) -> list[float]:
        """1.0 / 0.0 per (question, gold, response): strict JSON verdict, anything malformed is wrong."""
        with self._timed("judge"):
            return self._judge(items)

    def _judge(self, items: list[tuple[str, str, str]]) -> list[float]:
        self.counters["judge_items"] += len(items)
        prompts = [build_judge_prompt(q, g, r, self.templates) for q, g, r in items]
        fits = [len(self.engine.prompt_ids(p, thinking=False)) < self.engine.max_model_len - 1 for p in prompts]
        self.counters["judge_too_long"] += fits.count(False)
        reqs = [GenRequest(prompt=p, n=1, tag=f"judge:{i}", thinking=False)
                for i, (p, ok) in enumerate(zip(prompts, fits)) if ok]
        outs = iter(self._generate(reqs, sampling.greedy(self.judge_max_tokens)))
        return [grade_judged(next(outs)[0].text) if ok else 0.0 for ok in fits]

    @boundary("teacher")
    def score_topk(self, prompt_ids: list[list[int]], completion_ids: list[list[int]], k: int,
                   images: list[tuple] | None = None) -> list[dict]:
        with self._timed("score_topk"):
            return self.engine.score_topk(prompt_ids, completion_ids, k, images)

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
    def create(cls, teacher_cfg: Any, model_path: str | None = None, templates: Templates | None = None,
               resources: dict | None = None) -> TeacherGroup:
        """Start `teacher_cfg.num_replicas` replicas (`resources`: the config's placement.teacher)."""
        path = model_path or teacher_cfg.model.path
        if is_world_alias(path):
            raise ValueError(f"model path {path!r} is a world alias: pass the world's model directory as model_path")

        def start(i: int) -> tuple[Any, Any]:
            opts, pg = actor_options(teacher_cfg.cpus_per_replica, teacher_cfg.gpus_per_replica, teacher_cfg.tp,
                                     resources)
            kw = engine_kwargs(teacher_cfg.model, tp=teacher_cfg.tp, seed=teacher_cfg.seed + i,
                               kv_cache_gib=teacher_cfg.kv_cache_gib,
                               gpu_memory_utilization=teacher_cfg.gpu_memory_utilization,
                               max_logprobs=max(20, teacher_cfg.topk_logprobs),
                               **tp_engine_kwargs(teacher_cfg.gpus_per_replica, teacher_cfg.tp))
            return TeacherReplica.options(**opts).remote(str(path), kw, f"teacher-{i}", teacher_cfg.judge_max_tokens,
                                                           templates), pg

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
        def call(rep: Any, chunk: list, idx: list[int]) -> Any:  # seeds follow the request, not the split
            return rep.generate.remote(chunk, seeds_for_part(sampling, idx))

        return self._dispatch("generate", requests, [r.n for r in requests], call)

    def compress_async(self, items: Sequence[str], max_tokens: int, max_lines: int) -> TeacherCall:
        return self._dispatch("compress", items, [1] * len(items),
                              lambda rep, chunk, _: rep.compress.remote(chunk, max_tokens, max_lines))

    def judge_async(self, items: Sequence[tuple[str, str, str]]) -> TeacherCall:
        return self._dispatch("judge", items, [1] * len(items), lambda rep, chunk, _: rep.judge.remote(chunk))

    def score_topk_async(self, prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]],
                         k: int, images: Sequence[tuple] | None = None) -> TeacherCall:
        """`images[i]`: the images of sequence i (a vision-language teacher scores with them)."""
        if len(prompt_ids) != len(completion_ids):
            raise ValueError(f"{len(prompt_ids)} prompts but {len(completion_ids)} completions")
        images = list(images) if images is not None else [()] * len(prompt_ids)
        if len(images) != len(prompt_ids):
            raise ValueError(f"{len(images)} image tuples for {len(prompt_ids)} sequences")
        rows = list(zip(prompt_ids, completion_ids, images))
        return self._dispatch("score_topk", rows, [len(p) + len(c) for p, c, _ in rows],
                              lambda rep, chunk, idx: rep.score_topk.remote(
                                  [p for p, _, _ in chunk], [c for _, c, _ in chunk], k, [i for _, _, i in chunk]))

    # ------------------------------------------------------------------------------------ verbs (blocking)

    def generate(self, requests: Sequence[GenRequest], sampling: dict) -> list[list[Sample]]:
        return self.result(self.generate_async(requests, sampling))

    def compress(self, items: Sequence[str], max_tokens: int, max_lines: int) -> list[str | None]:
        return self.result(self.compress_async(items, max_tokens, max_lines))

    def judge(self, items: Sequence[tuple[str, str, str]]) -> list[float]:
        return self.result(self.judge_async(items))

    def score_topk(self, prompt_ids: Sequence[list[int]], completion_ids: Sequence[list[int]], k: int,
                   images: Sequence[tuple] | None = None) -> list[dict]:
        return self.result(self.score_topk_async(prompt_ids, completion_ids, k, images))

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
