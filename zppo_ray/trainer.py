"""The controller: one ZPPO step after another (spec §2), reading top to bottom like the paper's list.

It holds no model and imports no Ray. It asks the rollout pool for samples, grades them, asks the teacher
group for solutions and compressions, builds the reformulated prompts with the pure functions of
`zppo_ray.algo`, hands advantages to the learner group, passes the new weights' reference on and tells the
buffer what happened. Every role is passed in (zppo_ray/roles.py), so tests drive this class with fake
engines and the real run with the Ray-backed groups.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections import defaultdict

from zppo_ray import sampling
from zppo_ray.algo import offpolicy
from zppo_ray.algo.compression import cap_candidate, uniform_form
from zppo_ray.algo.guidance import Guidance, choose_guidance, inject
from zppo_ray.algo.methods import method
from zppo_ray.algo.reformulate import build_hint_prompt, build_hinted_question, question_prompt, split_prefix
from zppo_ray.algo.selection import aug_cap, replay_count
from zppo_ray.algo.zppo import (
    Group,
    can_reformulate,
    choose_instances,
    hard_questions,
    has_teacher_positive,
    informative_groups,
    pre_cap,
    render_instance,
    train_items,
)
from zppo_ray.data.cursor import DataCursor
from zppo_ray.data.schema import Question
from zppo_ray.engine.prompts import chat_prompt_ids
from zppo_ray.eval.harness import score_questions
from zppo_ray.learner.policy import reduce_metrics
from zppo_ray.lookahead import Lookahead
from zppo_ray.observe import progress, prometheus
from zppo_ray.observe.runlog import RunLog, eval_line, step_line
from zppo_ray.observe.step_metrics import step_metrics
from zppo_ray.rewards import grade, last_boxed
from zppo_ray.roles import Roles
from zppo_ray.seeds import derive_seed
from zppo_ray.state.checkpoint import TrainerState, rng_to_json
from zppo_ray.state.ledger import Ledger
from zppo_ray.step import RoleClock, Step, StepTimer
from zppo_ray.types import GenRequest, Sample, TrainItem

log = logging.getLogger("zppo_ray.trainer")


class Trainer:
    def __init__(self, cfg, roles: Roles, train_questions: list[Question], eval_questions: list[Question],
                 tokenizer, run_log: RunLog):
        self.method = method(cfg.algo.name)  # zppo_ray/algo/methods.py: the step shape and the help it gives
        if (cfg.algo.enable_bcq or cfg.algo.enable_ncq) and roles.teacher is None:
            raise ValueError("BCQ/NCQ need a teacher group")
        if self.method.always_teacher and roles.teacher is None:
            raise ValueError(f"algo.name={cfg.algo.name!r} needs a teacher group")
        if cfg.algo.use_buffer and roles.buffer is None:
            raise ValueError("algo.use_buffer needs a replay-buffer actor")
        self.cfg = cfg
        self.roles = roles
        self.tokenizer = tokenizer
        self.eval_questions = eval_questions
        self.log = run_log
        self.templates = cfg.templates
        self.data = DataCursor(train_questions, cfg.data.shuffle_seed)
        self.ledger = Ledger(q.id for q in train_questions)
        self.rng = random.Random(cfg.trainer.seed)
        self.step = 0
        self.version = 0
        self.last_push_bytes = 0
        self.clock = RoleClock()  # when each role had work: the idle seconds of every step
        # trainer.max_staleness >= 1: the next step's rollouts are produced while this one trains
        self.ahead = Lookahead() if cfg.trainer.max_staleness > 0 else None

    # ------------------------------------------------------------------------------------ sampling

    def _seeds(self, role: str, requests: list[GenRequest], at: int) -> list[int]:
        """One seed per request from (run seed, step, role, request id): no two samples of a run share
        noise, and a resumed step draws what the uninterrupted one drew (zppo_ray/seeds.py). `at`: the
        step's position (Step.at), which runs ahead of `self.step` with asynchronous rollouts."""
        base = self.cfg.rollout.seed if role == "student" else self.cfg.teacher.seed
        return [derive_seed(base, at, role, r.tag) for r in requests]

    def _student_sampling(self, requests: list[GenRequest], at: int) -> dict:
        return sampling.student(self.cfg.rollout, self._seeds("student", requests, at))

    def _teacher_sampling(self, requests: list[GenRequest], at: int) -> dict:
        return sampling.teacher(self.cfg.teacher, self._seeds("teacher", requests, at))

    def _plain_requests(self, qs: list[Question], n: int, kind: str = "plain") -> list[GenRequest]:
        return [GenRequest(question_prompt(q.text, self.templates), n=n, images=tuple(q.images),
                           tag=f"{kind}:{q.id}") for q in qs]

    # ------------------------------------------------------------------------------------ grading

    def grade_groups(self, questions: list[Question], samples: list[list[Sample]]) -> list[Group]:
        """Binary rewards against each question's gold; free-form answers go to the teacher as judge."""
        groups = []
        judge_items, judge_slots = [], []
        for q, ss in zip(questions, samples):
            g = Group(q.id, [s.text for s in ss], [0.0] * len(ss), [last_boxed(s.text) for s in ss])
            for i, s in enumerate(ss):
                if q.kind == "free":
                    judge_items.append((q.text, q.answer, s.text))
                    judge_slots.append((g, i))
                else:
                    g.rewards[i] = grade(s.text, q.answer, q.kind)
            groups.append(g)
        if judge_items:
            if self.roles.teacher is None:
                raise ValueError("free-form questions need the teacher as judge (teacher.num_replicas >= 1)")
            for (g, i), r in zip(judge_slots, self.roles.teacher.judge(judge_items)):
                g.rewards[i] = float(r)
        return groups

    # ------------------------------------------------------------------------------------ the step

    def train_step(self) -> dict:
        """One step of spec §2 as named calls (the numbers are the spec's); distillation has its own shape."""
        if self.method.step == "distill":
            return self._distill_step()
        window = time.perf_counter()
        s = self._next_step()  # 1-8 below: produced now, or (asynchronous) while the last step trained
        learn, push_s = self._update(s.items, s.timer, s.at)  # 9. I mini-batch PPO updates, then the weight push
        refresh = self._refresh(s)  # 10. the buffer sees PLAIN accuracies only
        return self._end_step(s, s.items, learn, push_s, refresh, window)

    def _produce(self, at: int) -> Step:
        """Steps 1-8 of step number at+1: everything up to the learner's batch (`Step.items`)."""
        s = Step(StepTimer(), at=at)
        self._prompts(s)  # 1. the next new questions + a uniform draw from the buffer
        return self._rollouts(s)

    def _rollouts(self, s: Step) -> Step:
        """Steps 2-8 for prompts drawn by `_prompts` (on a background thread with asynchronous rollouts)."""
        self._plain_rollouts(s)  # 2. G_S samples each, graded per chunk; the teacher starts on each chunk's hard ones
        s.hard = hard_questions(s.plain, self.cfg.algo.tau, self.rng)  # 3. hard set, hardest first, random ties
        self._teacher_pool(s)  # 4. the teacher's samples, graded: its correct ones are the positive pool
        self._help(s)  # 5-6. keep the hardest that can get help; BCQ then NCQ, or a baseline's help
        self._extra_rollouts(s)  # 7. rollouts on the new prompts, graded against the ORIGINAL gold answer
        s.items = self._advantages(s)  # 8. plain and extra groups of a question are separate groups
        return s

    def _next_step(self) -> Step:
        """The step to train on now. Synchronous (the paper): produced here. Asynchronous: the one produced
        in the background (the first one here), and the production of the next one starts before this one
        trains, so its rollouts overlap the learner (zppo_ray/lookahead.py)."""
        if self.ahead is None:
            return self._produce(self.step)
        s = self.ahead.take() or self._produce(self.step)
        if s.at + 2 <= self.cfg.trainer.steps:
            # The next step's prompts are drawn here, on the controller's thread: the ledger, the data cursor
            # and the buffer are only ever touched by this thread; the background thread samples and grades.
            before = self._state_now()
            nxt = Step(StepTimer(), at=s.at + 1)
            self._prompts(nxt)
            self.ahead.start(self._rollouts, nxt, before)
        return s

    def _prompts(self, s: Step) -> None:
        """Step 1: X_new (the data cursor) and X_replay (a uniform draw from the buffer, when it is on)."""
        a, n_new = self.cfg.algo, self.cfg.trainer.prompts_per_step
        s.new, s.epoch = self.data.next(n_new), self.data.epoch
        busy = self.ledger.in_flight()  # asynchronous: the step still training holds these (replay them later)
        if a.use_buffer:
            with s.timer("buffer"):
                size = self.roles.buffer.size()
                want = replay_count(a.rho_replay, n_new, size)
                drawn = self.roles.buffer.sample(want + len(busy) if busy else want)
            s.replay = [q for q in drawn if q.id not in busy][:want]
        new_ids = {q.id for q in s.new}
        s.replay = [q for q in s.replay if q.id not in new_ids]  # after a wrap-around a question can be both
        s.batch = s.new + s.replay
        s.by_id = {q.id: q for q in s.batch}
        self.ledger.serve(s.by_id, s.at + 1)

    def _plain_rollouts(self, s: Step) -> None:
        """Steps 2-4 overlapped: plain rollouts in chunks; each chunk is graded as soon as it arrives and the
        teacher starts on its hard questions while the student is still sampling the next chunk."""
        cfg, a = self.cfg, self.cfg.algo
        want_teacher = (a.enable_bcq or self.method.guidance is not None) and self.roles.teacher is not None
        # NCQ shows every wrong rollout, so they are worth compressing early; BCQ alone picks one at random later
        early = self.method.guidance is None and a.enable_ncq and self.roles.teacher is not None and cfg.teacher.compress
        pending = []
        try:
            with s.timer("generate"):
                for qs in self._chunks(s.batch):
                    reqs = self._plain_requests(qs, cfg.rollout.group_size)
                    pending.append((qs, self.clock.start("rollout"),
                                    self.roles.rollout.generate_async(reqs, self._student_sampling(reqs, s.at))))
            self._collect_plain(s, pending, want_teacher, early)
        except BaseException:  # the calls not collected must not hold back the next weight push
            for _, busy, p in pending:
                self.roles.rollout.abandon(p)
                self.clock.stop(busy)
            raise

    def _collect_plain(self, s: Step, pending: list, want_teacher: bool, early: bool) -> None:
        cfg, a = self.cfg, self.cfg.algo
        for qs, busy, p in pending:
            with s.timer("generate"):
                samples = self.roles.rollout.collect(p)
                self.clock.stop(busy)
                qs, samples = self._drop_skipped(qs, samples, s.skipped, s.at)
            with s.timer("grade"):
                groups = self.grade_groups(qs, samples)
            for q, g, ss in zip(qs, groups, samples):
                s.plain[q.id], s.plain_samples[q.id] = g, ss
            hard_here = [q for q, g in zip(qs, groups) if g.mean < a.tau]
            if want_teacher and hard_here:
                with s.timer("teacher"):
                    reqs = self._plain_requests(hard_here, cfg.teacher.group_size, "teacher")
                    s.teacher_calls.append((hard_here, self.clock.start("teacher"), self.roles.teacher.generate_async(
                        reqs, self._teacher_sampling(reqs, s.at))))
            if early and hard_here:
                self._compress_early(s, hard_here)

    def _compress_early(self, s: Step, hard: list[Question]) -> None:
        """Start compressing a chunk's likely candidates while the student samples the next chunk: every wrong
        rollout of the chunk's hardest questions, at most the cap's worth of questions per chunk (the NCQ
        candidates and the BCQ student candidate are among them; a question that misses the cap wastes them). `_compress` takes the summaries from here and asks only
        for what is missing (the teacher's BCQ candidates, which arrive after the last chunk). Summaries are
        greedy, so starting early changes when, not what."""
        t = self.cfg.teacher
        cap = aug_cap(self.cfg.algo.rho_aug, self.cfg.trainer.prompts_per_step)
        started = {x for texts, _, _ in s.early for x in texts}
        texts = list(dict.fromkeys(g.texts[i] for g in sorted((s.plain[q.id] for q in hard), key=lambda g: g.mean)[:cap]
                                   for i in g.wrong() if g.texts[i] not in started))
        if texts:
            s.early.append((texts, self.clock.start("teacher"),
                            self.roles.teacher.compress_async(texts, t.compress_max_tokens, t.compress_max_lines)))

    def _teacher_pool(self, s: Step) -> None:
        with s.timer("teacher"):
            for qs, busy, call in s.teacher_calls:
                samples = self.roles.teacher.result(call)
                self.clock.stop(busy)
                for q, g in zip(qs, self.grade_groups(qs, samples)):
                    s.teacher[q.id] = g

    def _help(self, s: Step) -> None:
        """Steps 5-6: the first rho_aug * |X_new| hardest questions that can get help (paper App. C), then the
        method's help under the same cap: BCQ then NCQ (candidates compressed by the teacher), or a
        baseline's hint / prefix / injected teacher response."""
        a = self.cfg.algo
        cap = aug_cap(a.rho_aug, self.cfg.trainer.prompts_per_step)
        if self.method.guidance is None:
            s.kept = pre_cap(s.hard, lambda q: can_reformulate(q, s.plain, s.teacher, a.enable_bcq, a.enable_ncq),
                             cap)
            s.requests = self._reformulations(s, cap)
        else:
            s.kept = pre_cap(s.hard, lambda q: has_teacher_positive(q, s.teacher), cap)
            guides = choose_guidance(s.kept, s.teacher, cap, self.method.guidance, self.rng)
            s.requests, s.injected = self._guided(guides, s)

    def _extra_rollouts(self, s: Step) -> None:
        if not s.requests:
            return
        with s.timer("generate"), self.clock.busy("rollout"):
            reqs = [r for _, _, r in s.requests]
            samples = self.roles.rollout.generate(reqs, self._student_sampling(reqs, s.at))
        done = [(r, ss) for r, ss in zip(s.requests, samples) if ss]  # a skipped request trains nothing
        with s.timer("grade"):
            groups = self.grade_groups([q for (_, q, _), _ in done], [ss for _, ss in done])
        s.reform = [(uid, g, ss) for ((uid, _, _), ss), g in zip(done, groups)]

    def _advantages(self, s: Step) -> list[TrainItem]:
        """Step 8. An injected teacher response joins its question's plain group (the buffer still sees the
        plain accuracy only)."""
        groups = [(f"plain:{q}", *self._with_injected(q, s.plain, s.plain_samples, s.injected)) for q in s.plain]
        groups += s.reform
        a = self.cfg.algo
        if a.dynamic_sampling:  # an all-equal group has advantage 0; drop it (or its question's groups)
            informative = informative_groups(groups, a.dynamic_sampling_by)
            s.dropped, groups = len(groups) - len(informative), informative
        return train_items(groups, s.by_id, a.advantage, a.adv_eps, a.overlong_filter)

    def _end_step(self, s: Step, items: list[TrainItem], learn: dict, push_s: float, refresh: dict,
                  window: float) -> dict:
        self.step += 1
        self._settle(s.new, s.replay, s.plain, s.skipped, refresh)
        seconds = s.timer.seconds_of_step()
        if self.ahead is not None:  # produced while the last step trained: its wall time is this call's
            seconds["total"] = time.perf_counter() - window
            seconds["idle"] = 0.0
        seconds.update({f"idle_{r}": v for r, v in self.clock.idle(window, time.perf_counter()).items()})
        metrics = step_metrics(self.step, self.version, s.epoch, s.batch, s.replay, s.plain, s.hard,
                               s.teacher, s.reform, refresh, learn, seconds, push_s)
        n_extra = sum(len(ss) for _, _, ss in s.reform)
        replay_ids = {q.id for q in s.replay}
        metrics.update(n_injected=len(s.injected), dropped_groups=s.dropped, n_skipped=len(s.skipped),
                       reform_share=n_extra / len(items) if items else 0.0,
                       pos_adv_frac=sum(it.advantage > 0 for it in items) / len(items) if items else 0.0,
                       n_kept=len(s.kept), n_kept_replay=sum(q in replay_ids for q in s.kept), **s.compress)
        return self._finish(metrics, refresh)

    def _refresh(self, s: Step) -> dict:
        """Step 10: admit / graduate / evict from the PLAIN accuracies of this step's questions."""
        if not self.cfg.algo.use_buffer:
            return {"admitted": 0, "graduated": 0, "evicted": 0, "size": 0, "fates": []}
        with s.timer("buffer"):
            return self.roles.buffer.refresh(self.step + 1, {q: g.mean for q, g in s.plain.items()}, s.by_id,
                                             [q.id for q in s.replay if q.id in s.plain], self.cfg.rollout.group_size)

    def _finish(self, metrics: dict, refresh: dict) -> dict:
        self.log.write("step", **metrics)
        prometheus.record_step(metrics, self.last_push_bytes)
        for fate in refresh["fates"]:
            self.log.write("fate", step=self.step, **fate)
        return metrics

    def _drop_skipped(self, qs: list[Question], samples: list[list[Sample]], skipped: list[str], at: int):
        """Questions whose rollouts came back empty (the pool skipped a request it could not process after a
        retry on its own) leave the step: an empty group would read as accuracy 0 and be admitted as hard."""
        keep = [(q, ss) for q, ss in zip(qs, samples) if ss]
        for q, ss in zip(qs, samples):
            if not ss:
                skipped.append(q.id)
                log.warning("step %d: question %s skipped: the rollout pool could not process it", at + 1, q.id)
                prometheus.record("zppo_questions_skipped", 1, reason="rollout")
        return [q for q, _ in keep], [ss for _, ss in keep]

    def _settle(self, new, replay, plain, skipped, refresh) -> None:
        """The ledger's end of step (zppo_ray/state/ledger.py), logged so the chaos audit can replay it."""
        # A replayed question that was skipped stays in the buffer (the refresh did not see it).
        buffered = [*refresh.get("buffered", ()), *(q.id for q in replay if q.id in skipped)]
        self.ledger.settle(plain, [q for q in skipped if q not in buffered], buffered, refresh["fates"], self.step)
        self.log.write("served", step=self.step, new=[q.id for q in new], replay=[q.id for q in replay],
                       skipped=skipped)
        for state, n in self.ledger.counts().items():
            prometheus.record("zppo_questions", n, state=state)

    def _distill_step(self) -> dict:
        """Off- and on-policy distillation (spec §5): a divergence (JSD by default) between the student's
        and the teacher's next-token distributions (teacher top-k) along teacher sequences that were
        verified correct (off-policy) or along the student's own samples, unfiltered (on-policy).

        With `algo.use_buffer` (Off-Distill†, On-Distill† of the paper's tables) the step draws replays and
        refreshes the buffer like every other method, from the student's plain accuracies. On-policy
        distillation has them from its own samples; off-policy distillation trains on teacher text only,
        so it then also samples G_S plain student rollouts per prompt, graded for the buffer and never
        trained on (our choice: the paper does not say how its Off-Distill† measured accuracy).
        """
        cfg, a = self.cfg, self.cfg.algo
        s = Step(StepTimer(), at=self.step)
        self._prompts(s)
        timer, batch, skipped, at = s.timer, s.batch, s.skipped, s.at
        plain: dict[str, Group] = {}
        teacher: dict[str, Group] = {}
        if a.name == "offpolicy_distill":
            with timer("teacher"):
                reqs = self._plain_requests(batch, cfg.teacher.group_size)
                samples = self.roles.teacher.generate(reqs, self._teacher_sampling(reqs, at))
            qs, samples = self._drop_skipped(batch, samples, skipped, at)
            with timer("grade"):
                groups = self.grade_groups(qs, samples)
            teacher = {q.id: g for q, g in zip(qs, groups)}
            # The student learns to continue ITS prompt: its own chat template, the teacher text re-tokenized.
            seqs = [(q, self._prompt_ids(q), self._student_ids(ss[i].text, eos=True))
                    for q, g, ss in zip(qs, groups, samples) for i in g.correct()]
            if a.use_buffer:  # the buffer needs the student's own plain accuracy (see the docstring)
                with timer("generate"):
                    reqs = self._plain_requests(qs, cfg.rollout.group_size)
                    student = self.roles.rollout.generate(reqs, self._student_sampling(reqs, at))
                qs, student = self._drop_skipped(qs, student, skipped, at)
                with timer("grade"):
                    plain = {q.id: g for q, g in zip(qs, self.grade_groups(qs, student))}
        else:
            with timer("generate"):
                reqs = self._plain_requests(batch, cfg.rollout.group_size)
                samples = self.roles.rollout.generate(reqs, self._student_sampling(reqs, at))
            qs, samples = self._drop_skipped(batch, samples, skipped, at)
            with timer("grade"):  # for the log and the buffer: on-policy distillation does not filter by reward
                groups = self.grade_groups(qs, samples)
            plain = {q.id: g for q, g in zip(qs, groups)}
            seqs = [(q, s.prompt_ids, s.completion_ids) for q, ss in zip(qs, samples) for s in ss if s.completion_ids]
        items = []
        if seqs:
            with timer("teacher"):
                rows = self.roles.teacher.score_topk([p for _, p, _ in seqs], [c for _, _, c in seqs],
                                                     cfg.teacher.topk_logprobs, [tuple(q.images) for q, _, _ in seqs])
            items = [TrainItem(p, c, 0.0, teacher_topk_ids=r["topk_ids"], teacher_topk_logprobs=r["topk_logprobs"],
                               images=tuple(q.images)) for (q, p, c), r in zip(seqs, rows)]
        learn, push_s = self._update(items, timer, at, loss_fn=a.divergence)
        s.plain = plain
        refresh = self._refresh(s)
        self.step += 1
        served = plain if a.use_buffer or a.name == "onpolicy_distill" else {q: None for q in teacher}
        self._settle(s.new, s.replay, served, skipped, refresh)
        metrics = step_metrics(self.step, self.version, self.data.epoch, batch, s.replay, plain, [], teacher, [],
                               refresh, learn, timer.seconds_of_step(), push_s)
        metrics.update(n_distill=len(items), n_injected=0, dropped_groups=0, n_skipped=len(skipped))
        return self._finish(metrics, refresh)

    # ------------------------------------------------------------------------------------ pieces

    def _chunks(self, batch: list[Question]) -> list[list[Question]]:
        """Split the plain prompts so grading and teacher work can start before all sampling is done."""
        n = max(1, min(len(batch), self.cfg.trainer.plain_chunks))
        size = -(-len(batch) // n)
        return [batch[i:i + size] for i in range(0, len(batch), size)]

    def _compress(self, candidates: list[str], s: Step) -> list[str | None]:
        """The teacher's summary of each candidate, or None where it fell back (or compression is off): those
        started per chunk (`_compress_early`), the rest asked for now."""
        t = self.cfg.teacher
        known: dict[str, str | None] = {}
        for texts, busy, call in s.early:
            known.update(zip(texts, self.roles.teacher.result(call)))
            self.clock.stop(busy)
        s.early = []
        if not candidates or not t.compress:
            return [None] * len(candidates)
        missing = list(dict.fromkeys(c for c in candidates if c not in known))
        if missing:
            known.update(zip(missing, self.roles.teacher.compress(missing, t.compress_max_tokens, t.compress_max_lines)))
        return [known[c] for c in candidates]

    def _truncate(self, candidate: str) -> str:
        """Raw truncation (compression off, or a fallback) to the same caps, in the student's tokens."""
        t, tok = self.cfg.teacher, self.tokenizer
        return cap_candidate(candidate, t.compress_max_lines, t.compress_max_tokens,
                             lambda x: tok(x, add_special_tokens=False)["input_ids"], tok.decode)

    def _reformulations(self, s: Step, cap: int) -> list[tuple[str, Question, GenRequest]]:
        """ZPPO step 6: BCQ then NCQ instances for the kept questions, as (uid, question, request).

        Candidates are shown as the teacher's summaries only when every candidate of the instance got one;
        otherwise all of them are shown raw-truncated (`stats` counts both), so the two candidates of a BCQ
        never differ in form (a clean summary next to a raw fragment would give the answer away)."""
        a, stats = self.cfg.algo, s.compress
        instances = choose_instances(s.kept, s.plain, s.teacher, cap, a.enable_bcq, a.enable_ncq, self.rng)
        with s.timer("compress"), self.clock.busy("teacher"):
            summaries = self._compress([c for i in instances for c in i.candidates], s)
        out, k = [], 0
        for inst in instances:
            part = summaries[k:k + len(inst.candidates)]
            k += len(inst.candidates)
            stats["compress_fallbacks"] += part.count(None) if self.cfg.teacher.compress else 0
            if not uniform_form(part):
                stats["raw_instances"] += 1
                part = [self._truncate(c) for c in inst.candidates]
            q = s.by_id[inst.qid]
            prompt = render_instance(inst, q.text, part, self.rng, self.templates, a.ncq_list_unparseable)
            out.append((f"{inst.kind}:{q.id}", q, GenRequest(prompt, n=self.cfg.rollout.group_size,
                                                             images=tuple(q.images), tag=f"{inst.kind}:{q.id}")))
        return out

    def _guided(self, guides: list[Guidance], s: Step):
        """The baselines' step 6: Hint / Prefix requests (uid, question, request), or teacher samples to
        inject into plain groups ({qid: Sample}, in student tokens)."""
        g_s, requests, injected = self.cfg.rollout.group_size, [], {}
        by_id, plain_samples = s.by_id, s.plain_samples
        hints: list[list[Sample]] = []
        if guides and guides[0].kind == "hint":
            with s.timer("teacher"), self.clock.busy("teacher"):  # greedy: a hint is a rewrite, not an exploration
                reqs = [GenRequest(build_hint_prompt(g.teacher_text, self.templates), n=1, tag=f"hint:{g.qid}",
                                   thinking=False) for g in guides]
                hints = self.roles.teacher.generate(
                    reqs, sampling.greedy(self.cfg.teacher.max_new_tokens, self._seeds("teacher", reqs, s.at)))
        for i, g in enumerate(guides):
            q = by_id[g.qid]
            if g.kind == "hint":
                if not hints[i]:  # the teacher group skipped this item (it failed twice): no hint, no group
                    log.warning("step %d: no hint for %s: the teacher could not process it", s.at + 1, q.id)
                    continue
                prompt = build_hinted_question(q.text, hints[i][0].text, self.templates)
                requests.append((f"hint:{q.id}", q, GenRequest(prompt, n=g_s, images=tuple(q.images),
                                                               tag=f"hint:{q.id}")))
            elif g.kind == "prefix":
                prefix, _ = split_prefix(self._student_ids(g.teacher_text), self.cfg.algo.prefix_alpha)
                requests.append((f"prefix:{q.id}", q, GenRequest(
                    question_prompt(q.text, self.templates), n=g_s, images=tuple(q.images),
                    prefix_ids=prefix, tag=f"prefix:{q.id}")))
            else:
                ids = self._student_ids(g.teacher_text, eos=True)
                injected[q.id] = Sample(plain_samples[q.id][0].prompt_ids, ids, [0.0] * len(ids), g.teacher_text,
                                        "stop", version=-1)
        return requests, injected

    @staticmethod
    def _with_injected(qid, plain, plain_samples, injected) -> tuple[Group, list[Sample]]:
        if qid not in injected:
            return plain[qid], plain_samples[qid]
        s = injected[qid]
        return inject(plain[qid], s.text, last_boxed(s.text)), plain_samples[qid] + [s]

    def _prompt_ids(self, q: Question) -> list[int]:
        return chat_prompt_ids(self.tokenizer, question_prompt(q.text, self.templates), len(q.images))

    def _student_ids(self, text: str, eos: bool = False) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return ids + [self.tokenizer.eos_token_id] if eos else ids

    def _update(self, items: list[TrainItem], timer: StepTimer, at: int,
                loss_fn: str | None = None) -> tuple[dict, float]:
        """Step 9 and the weight push. A batch without a single loss token (every group dropped, every
        sample overlong, no correct teacher sample to distill) changes nothing: no update, no new version.

        Asynchronous rollouts: samples more than `trainer.max_staleness` versions behind the learner are
        left out (counted in `n_stale`).

        Colocated rollout engines (`rollout.colocate_with_learner`) sleep during the learner phase and wake
        in vLLM's order: weights first, the new weights pushed into them, then the KV cache."""
        stale = {}
        if self.ahead is not None:
            items, n = offpolicy.split_stale(items, self.version, self.cfg.trainer.max_staleness)
            stale = {"n_stale": float(n)}
            if n:
                log.warning("step %d: %d sample(s) more than %d version(s) behind the learner left out", at + 1, n,
                            self.cfg.trainer.max_staleness)
        units = sum(sum(it.loss_mask) if it.loss_mask is not None else len(it.completion_ids) for it in items)
        if units == 0:
            log.info("step %d: no loss tokens in the batch; no update this step", at + 1)
            return stale, 0.0
        colocated = self.cfg.rollout.colocate_with_learner
        with timer("learn"), self.clock.busy("learner"):
            if colocated:
                self.roles.rollout.sleep()
            learn = self._learn(items, at, loss_fn)
        # Synchronous: every rollout worker moves to the new version before anything is generated again.
        # Asynchronous: the pool takes the push between two generate calls of the step being produced, never
        # inside one. The weights go from the learner to the workers (zppo_ray/weights); this process passes
        # only versions and handles.
        with timer("push"), self.clock.busy("learner"):
            self.version += 1
            if colocated:
                self.roles.rollout.wake_up(["weights"])
            push = self.roles.weights.push(self.version)
            self.last_push_bytes = push.bytes
            if colocated:
                self.roles.rollout.wake_up(["kv_cache"])
        return {**learn, **stale}, push.seconds

    def _learn(self, items: list[TrainItem], at: int, loss_fn: str | None = None) -> dict:
        a = self.cfg.algo
        learner = self.roles.learner
        off = {}
        if loss_fn is None:  # PPO: the ratio is against the step-start policy
            for it, lp in zip(items, learner.compute_logprobs(items)):
                it.old_logprobs = lp
            if a.tis_cap:  # the engine sampled from mu, not pi_old: weight each token by min(pi_old / mu, cap)
                for it in items:
                    it.is_weights = offpolicy.tis_weights(it, a.tis_cap)
            off = offpolicy.mismatch(items, self.version, a.tis_cap or None)
        order = list(range(len(items)))
        if a.minibatch_split == "shuffle":
            # Asynchronous: this runs beside the producer thread, which owns self.rng; a stream of its own
            # per step keeps both reproducible.
            rng = self.rng if self.ahead is None else random.Random(derive_seed(self.cfg.trainer.seed, at, "minibatch"))
            rng.shuffle(order)
        n_mb = min(a.updates_per_step, len(items))
        bounds = [round(i * len(order) / n_mb) for i in range(n_mb + 1)]
        per_mb = [learner.train_minibatch([items[j] for j in order[lo:hi]], loss_fn)
                  for lo, hi in zip(bounds, bounds[1:]) if hi > lo]
        return {**reduce_metrics(per_mb), **off}

    # ------------------------------------------------------------------------------------ eval

    def evaluate(self, label: str) -> dict[str, float]:
        """pass@1 on the held-out questions, per tier, overall and per skill group where the world tags one
        (extra["skill_group"]), through the evaluation harness's scoring (zppo_ray/eval/harness.py: the
        paper's decoding; free-form answers judged by the teacher). The same seed at every evaluation, so
        the numbers are comparable across steps."""
        if self.ahead is not None:  # a step being produced finishes first: the evaluation has the pool to itself
            self.ahead.wait()
        e, qs = self.cfg.eval, self.eval_questions
        by_tier: dict[str, list[Question]] = defaultdict(list)
        for q in qs:
            by_tier[q.tier or "all"].append(q)
        judge = self.roles.teacher if any(q.kind == "free" for q in qs) else None
        if judge is None and any(q.kind == "free" for q in qs):
            raise ValueError("free-form questions need the teacher as judge (teacher.num_replicas >= 1)")
        _, _, records, _, _ = score_questions(
            self.roles.rollout, by_tier, e.num_samples, sampling.evaluation(e, derive_seed(self.cfg.trainer.seed,
                                                                                          "eval")),
            self.templates, judge, self.cfg.teacher.judge_max_tokens)
        means: dict[str, list[float]] = defaultdict(list)
        skill_means: dict[str, list[float]] = defaultdict(list)  # worlds that tag a question's skill group
        group_of = {q.id: q.extra.get("skill_group") for q in qs}
        for r in records:
            mean = sum(r.rewards) / len(r.rewards)
            means[r.benchmark].append(mean)
            if group_of.get(r.id):
                skill_means[f"skill:{group_of[r.id]}"].append(mean)
        acc = {t: sum(v) / len(v) for t, v in means.items()}
        acc["all"] = sum(sum(v) for v in means.values()) / max(1, sum(len(v) for v in means.values()))
        acc.update({k: sum(v) / len(v) for k, v in skill_means.items()})
        self.log.write("eval", step=self.step, label=label, accuracy=acc)
        progress.say(eval_line(label, acc))
        return acc

    # ------------------------------------------------------------------------------------ state

    def state(self) -> TrainerState:
        """What a checkpoint saves. With a step being produced in the background: the state before it drew
        anything, so a resumed run draws it again (its questions are in flight, not yet settled)."""
        if self.ahead is not None and self.ahead.in_flight:  # its draws undone; the steps trained so far kept
            return dataclasses.replace(self.ahead.before, step=self.step, version=self.version)
        return self._state_now()

    def _state_now(self) -> TrainerState:
        return TrainerState(step=self.step, version=self.version, cursor=self.data.cursor,
                            epoch=self.data.epoch, rng_state=rng_to_json(self.rng))

    def load_state(self, state: TrainerState) -> None:
        if self.ahead is not None:
            self.ahead.discard()  # its rollouts were drawn from the state being replaced
        self.clock = RoleClock()  # spans of a failed step never close
        self.step, self.version = state.step, state.version
        self.data = DataCursor(self.data.questions, self.cfg.data.shuffle_seed, state.cursor, state.epoch)
        state.restore_rng(self.rng)

    def close(self) -> None:
        """Stop producing ahead: waits until the step being produced is done, then drops it."""
        if self.ahead is not None:
            self.ahead.close()

    def print_step(self, metrics: dict) -> None:
        if self.cfg.metrics.log_every and metrics["step"] % self.cfg.metrics.log_every == 0:
            progress.say(step_line(metrics))
