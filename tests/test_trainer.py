"""The controller's step logic with fake engines (the engines themselves are tested in test_engine.py).

A fake rollout pool answers each request from a script: for (kind, question id, step) it says which of
the n samples are correct. That makes every corner case of spec §2 reachable in milliseconds.
"""

from __future__ import annotations

import math
import threading

import pytest

from zppo_ray.actors.buffer import ReplayBufferShell
from zppo_ray.config import load_config
from zppo_ray.data.schema import Question
from zppo_ray.observe.runlog import RunLog
from zppo_ray.roles import Roles
from zppo_ray.trainer import Trainer
from zppo_ray.types import Sample


def answer(ok: bool, gold: str) -> str:
    return f"<think>work</think>\n\\boxed{{{gold if ok else 'wrong'}}}"


class FakeRollout:
    """Scripted student: script(kind, qid, step) -> list of correctness flags, one per sample."""

    def __init__(self, questions: dict[str, Question], script):
        self.q = questions
        self.script = script
        self.version = 0
        self.requests = []  # (step-tagged) every request seen
        self.step = 0

    def _one(self, req):
        kind, qid = req.tag.split(":", 1)[0], req.tag.rsplit(":", 1)[1]  # "eval:<benchmark>:<qid>" too
        flags = self.script(kind, qid, self.step)
        assert len(flags) == req.n
        self.requests.append((self.step, kind, qid, req.prompt))
        return [Sample([1, 2], [3, 4], [-0.1, -0.2], answer(f, self.q[qid].answer), "stop", self.version)
                for f in flags]

    def generate_async(self, requests, sampling):
        return [self._one(r) for r in requests]

    def collect(self, pending):
        return pending

    def abandon(self, pending):
        pass

    def generate(self, requests, sampling):
        return [self._one(r) for r in requests]


class FakeWeights:
    """The weight sync: moves the fake rollout to the pushed version (the trainer passes versions only)."""

    def __init__(self, rollout):
        self.rollout, self.pushed = rollout, []

    def push(self, version, rollback=False):
        from zppo_ray.weights import PushReport

        assert version == self.rollout.version + 1
        self.pushed.append(version)
        self.rollout.version = version
        self.rollout.step += 1
        return PushReport(0.001, 123, 1)


class FakeTeacher:
    def __init__(self, questions, correct: bool):
        self.q, self.correct, self.generated, self.compressed = questions, correct, [], []
        self.hint_prompts, self.scored = [], []

    def generate_async(self, requests, sampling):
        self.generated += [r.tag.split(":", 1)[1] for r in requests]
        return [[Sample([1], [2], [0.0], answer(self.correct and i == 0, self.q[r.tag.split(":", 1)[1]].answer),
                        "stop", 0) for i in range(r.n)] for r in requests]

    def generate(self, requests, sampling):
        if requests and requests[0].tag.startswith("hint:"):
            self.hint_prompts += [r.prompt for r in requests]
            return [[Sample([1], [2], [0.0], f"HINT for {r.tag}", "stop", 0)] for r in requests]
        return self.generate_async(requests, sampling)

    def score_topk(self, prompt_ids, completion_ids, k, images=None):
        self.scored += list(zip(prompt_ids, completion_ids))
        self.scored_images = list(images or [])
        return [{"topk_ids": [[t, 0] for t in c], "topk_logprobs": [[-0.1, -2.4] for _ in c],
                 "token_logprobs": [-0.1] * len(c)} for c in completion_ids]

    def result(self, call):
        return call

    def compress_async(self, items, max_tokens, max_lines):
        self.early = getattr(self, "early", []) + [list(items)]
        return self.compress(items, max_tokens, max_lines)

    def compress(self, items, max_tokens, max_lines):
        """A summary per candidate, or None (a fallback) where `self.refuse(candidate)` says so."""
        self.compressed += items
        refuse = getattr(self, "refuse", lambda c: False)
        return [None if refuse(c) else f"compressed<{c[-12:]}>" for c in items]


class FakeLearner:
    def __init__(self):
        self.minibatches = []

    def compute_logprobs(self, items):
        return [[-0.1] * len(it.completion_ids) for it in items]

    def train_minibatch(self, items, loss_fn=None):
        if loss_fn is None:
            assert all(it.old_logprobs is not None for it in items)
        else:
            assert all(it.teacher_topk_ids is not None for it in items)
        self.minibatches.append(items)
        self.loss_fns = getattr(self, "loss_fns", []) + [loss_fn]
        return {"loss": 0.0, "tokens": float(sum(len(it.completion_ids) for it in items))}


class FakeTokenizer:
    """One token per character (ids 10..), eos = 2: enough to check what the controller tokenizes."""

    eos_token_id = 2

    def __call__(self, text, add_special_tokens=False, split_special_tokens=False):
        return {"input_ids": [10 + ord(c) % 90 for c in text]}

    def decode(self, ids):
        return "".join(chr(i - 10 + 32) if i - 10 < 32 else chr(i - 10) for i in ids)

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "U:" + messages[0]["content"] + "\nA:"


def make(tmp_path, script, teacher_correct=True, overrides=(), n_questions=8):
    cfg = load_config(None, ["trainer.prompts_per_step=4", "rollout.group_size=4", "teacher.group_size=2",
                             "algo.rho_aug=0.5", "algo.rho_replay=0.5", *overrides])
    qs = [Question(id=f"q{i}", prompt=f"question {i}", answer=str(i), tier="1") for i in range(n_questions)]
    by_id = {q.id: q for q in qs}
    rollout = FakeRollout(by_id, script)
    roles = Roles(rollout=rollout, learner=FakeLearner(), weights=FakeWeights(rollout),
                  teacher=FakeTeacher(by_id, teacher_correct),
                  buffer=ReplayBufferShell(cfg.buffer, 0))
    trainer = Trainer(cfg, roles, qs, qs[:2], tokenizer=FakeTokenizer(), run_log=RunLog(tmp_path, enabled=False))
    return trainer, roles


def all_right(kind, qid, step):
    return [True] * (4 if kind != "teacher" else 2)


def test_no_hard_question_means_no_teacher_no_reformulation(tmp_path):
    trainer, roles = make(tmp_path, all_right)
    m = trainer.train_step()
    assert m["n_hard"] == 0 and m["n_bcq"] == m["n_ncq"] == 0
    assert roles.teacher.generated == [] and roles.teacher.compressed == []
    assert m["admitted"] == 0 and m["buffer_size"] == 0
    items = [it for mb in roles.learner.minibatches for it in mb]
    assert len(items) == 4 * 4 and all(it.advantage == 0.0 for it in items)  # all groups degenerate
    assert len(roles.learner.minibatches) == 4  # I = 4 mini-batches, one optimizer step each
    assert roles.rollout.version == 1 and m["version"] == 1


def test_hard_questions_get_bcq_then_ncq_under_the_cap(tmp_path):
    # q0 all wrong, q1 1/4, q2 2/4 (not hard at tau 0.5), q3 all right
    pattern = {"q0": [0, 0, 0, 0], "q1": [1, 0, 0, 0], "q2": [1, 1, 0, 0], "q3": [1, 1, 1, 1]}

    def script(kind, qid, step):
        return [bool(x) for x in pattern.get(qid, [1, 1, 1, 1])] if kind == "plain" else [True] * 4

    trainer, roles = make(tmp_path, script)
    trainer.data.next = lambda n: [trainer.data.questions[i] for i in range(4)]  # q0..q3, fixed order
    m = trainer.train_step()
    assert m["n_hard"] == 2
    assert sorted(roles.teacher.generated) == ["q0", "q1"]  # teacher samples for every hard question
    # cap = floor(0.5 * 4) = 2: q0 gets BCQ then NCQ, nothing left for q1
    reform = [(k, q) for s, k, q, _ in roles.rollout.requests if k in ("bcq", "ncq")]
    assert reform == [("bcq", "q0"), ("ncq", "q0")]
    bcq_prompt = next(p for s, k, q, p in roles.rollout.requests if k == "bcq")
    assert bcq_prompt.count("compressed<") == 2  # both candidates went through the teacher's compression
    uids = {it.group for mb in roles.learner.minibatches for it in mb}
    assert {"plain:q0", "bcq:q0", "ncq:q0"} <= uids  # separate groups per prompt kind
    assert m["bcq_reward"] == 1.0 and m["admitted"] == 2


def test_teacher_always_wrong_gives_no_bcq_but_ncq(tmp_path):
    def script(kind, qid, step):
        return [False] * 4 if kind == "plain" else [True] * 4

    trainer, roles = make(tmp_path, script, teacher_correct=False)
    m = trainer.train_step()
    assert m["n_hard"] == 4 and m["teacher_solved"] == 0
    assert m["n_bcq"] == 0 and m["n_ncq"] == 2  # cap 2, one NCQ each for the two hardest


def test_buffer_empty_then_replay_and_graduate_in_one_step(tmp_path):
    def script(kind, qid, step):
        if kind != "plain":
            return [True] * 4
        # step 0: q0 hard (admitted). step 1: q0 is replayed and now solved -> graduates.
        return [step >= 1 or qid != "q0"] * 4

    trainer, roles = make(tmp_path, script)
    m1 = trainer.train_step()
    assert m1["n_replay"] == 0 and m1["admitted"] == 1  # buffer was empty: nothing to replay
    m2 = trainer.train_step()
    assert m2["n_replay"] == 1 and m2["graduated"] == 1 and m2["buffer_size"] == 0
    fate = roles.buffer.fates()[0]
    assert fate["qid"] == "q0" and fate["fate"] == "graduated" and fate["visits"] == 1
    assert fate["entry_accuracy"] == 0.0 and fate["exit_accuracy"] == 1.0


def test_buffer_full_evicts_oldest(tmp_path):
    def script(kind, qid, step):
        return [False] * 4 if kind == "plain" else [True] * 4

    trainer, roles = make(tmp_path, script, overrides=["buffer.capacity=3", "algo.rho_replay=0"])
    m = trainer.train_step()
    assert m["admitted"] == 4 and m["evicted"] == 1 and m["buffer_size"] == 3
    assert roles.buffer.fates()[0]["fate"] == "evicted"


def test_grpo_uses_neither_teacher_nor_buffer(tmp_path):
    def script(kind, qid, step):
        return [False, True, False, False]

    trainer, roles = make(tmp_path, script, overrides=["algo.name=grpo"])
    m = trainer.train_step()
    assert roles.teacher.generated == [] and m["n_bcq"] == m["n_ncq"] == 0 and m["buffer_size"] == 0
    adv = [it.advantage for mb in roles.learner.minibatches for it in mb]
    assert any(a > 0 for a in adv) and any(a < 0 for a in adv)


def test_state_round_trip_continues_the_same_data_order(tmp_path):
    trainer, _ = make(tmp_path, all_right, n_questions=10)
    trainer.train_step()
    state = trainer.state()
    expected = [q.id for q in trainer.data.next(6)]  # crosses into the next epoch (10 questions)
    other, _ = make(tmp_path, all_right, n_questions=10)
    other.load_state(state)
    assert [q.id for q in other.data.next(6)] == expected
    assert other.step == 1 and other.version == 1
    assert other.rng.random() == trainer.rng.random()  # the controller RNG continues where it stopped


def hard_q0_q1(kind, qid, step):
    """q0 all wrong, q1 1/4 right (both hard), the rest solved; every extra group all right."""
    pattern = {"q0": [0, 0, 0, 0], "q1": [1, 0, 0, 0]}
    return [bool(x) for x in pattern.get(qid, [1] * 4)] if kind == "plain" else [True] * 4


def learned(roles):
    return [it for mb in roles.learner.minibatches for it in mb]


def test_hint_asks_the_teacher_for_a_hint_and_adds_a_hinted_group(tmp_path):
    trainer, roles = make(tmp_path, hard_q0_q1, overrides=["algo.name=hint"])
    trainer.data.next = lambda n: [trainer.data.questions[i] for i in range(4)]
    m = trainer.train_step()
    assert m["n_hard"] == 2 and sorted(roles.teacher.generated) == ["q0", "q1"]
    assert len(roles.teacher.hint_prompts) == 2 and "\\boxed{0}" in roles.teacher.hint_prompts[0]  # a correct sample
    hinted = [(q, p) for _, k, q, p in roles.rollout.requests if k == "hint"]
    assert [q for q, _ in hinted] == ["q0", "q1"] and "<hint>\nHINT for hint:q0\n</hint>" in hinted[0][1]
    assert {"hint:q0", "hint:q1"} <= {it.group for it in learned(roles)}
    assert m["n_bcq"] == m["n_ncq"] == 0 and roles.teacher.compressed == []


def test_prefix_forces_the_teacher_prefix_and_masks_it(tmp_path):
    class PrefixRollout(FakeRollout):
        def _one(self, req):
            out = super()._one(req)
            if req.prefix_ids:  # like the engine: prefix in the completion, masked out of the loss
                self.prefixes = getattr(self, "prefixes", []) + [list(req.prefix_ids)]
                for s in out:
                    s.completion_ids = list(req.prefix_ids) + s.completion_ids
                    s.loss_mask = [0] * len(req.prefix_ids) + [1, 1]
            return out

    trainer, roles = make(tmp_path, hard_q0_q1, overrides=["algo.name=prefix", "algo.prefix_alpha=0.4"])
    roles.rollout.__class__ = PrefixRollout
    trainer.data.next = lambda n: [trainer.data.questions[i] for i in range(4)]
    trainer.train_step()
    text = answer(True, "0")  # q0's correct teacher sample
    ids = FakeTokenizer()(text)["input_ids"]
    assert roles.rollout.prefixes[0] == ids[:int(0.4 * len(ids))]
    items = [it for it in learned(roles) if it.group == "prefix:q0"]
    assert len(items) == 4 and all(it.loss_mask[:len(roles.rollout.prefixes[0])] == [0] * len(roles.rollout.prefixes[0])
                                   for it in items)


def test_teacher_inject_adds_one_verified_member_to_the_plain_group(tmp_path):
    trainer, roles = make(tmp_path, hard_q0_q1, overrides=["algo.name=teacher_inject"])
    trainer.data.next = lambda n: [trainer.data.questions[i] for i in range(4)]
    m = trainer.train_step()
    q0 = [it for it in learned(roles) if it.group == "plain:q0"]
    assert len(q0) == 5 and m["n_injected"] == 2  # G_S = 4 rollouts + the teacher's response
    teacher_ids = FakeTokenizer()(answer(True, "0"))["input_ids"] + [2]
    injected = [it for it in q0 if it.completion_ids == teacher_ids]
    rollouts = [it for it in q0 if it.completion_ids == [3, 4]]
    assert len(injected) == 1 and len(rollouts) == 4
    assert injected[0].advantage > 0 and all(it.advantage < 0 for it in rollouts)  # the only correct member
    assert m["admitted"] == 2  # the buffer saw plain accuracy 0 and 1/4, not the injected group's


def test_offpolicy_distill_trains_on_correct_teacher_samples_only(tmp_path):
    from zppo_ray.algo.reformulate import with_format_closer

    trainer, roles = make(tmp_path, all_right, overrides=["algo.name=offpolicy_distill"])
    trainer.data.next = lambda n: [trainer.data.questions[i] for i in range(4)]
    m = trainer.train_step()
    # teacher.group_size = 2, one of them correct (FakeTeacher): 4 prompts -> 4 sequences
    assert m["n_distill"] == 4 and len(roles.teacher.scored) == 4
    assert roles.rollout.requests == []  # the student samples nothing
    assert roles.learner.loss_fns == ["jsd"] and len(roles.learner.minibatches) == 1  # one update per step
    tok = FakeTokenizer()
    p, c = roles.teacher.scored[0]  # q0, in the student's chat template and tokens, ending with eos
    assert p == tok("U:" + with_format_closer(trainer.data.questions[0].text) + "\nA:")["input_ids"]
    assert c == tok(answer(True, "0"))["input_ids"] + [2]
    assert m["version"] == 1


def test_offpolicy_distill_without_a_correct_teacher_sample_skips_the_update(tmp_path):
    trainer, roles = make(tmp_path, all_right, teacher_correct=False, overrides=["algo.name=offpolicy_distill"])
    m = trainer.train_step()
    assert m["n_distill"] == 0 and roles.learner.minibatches == [] and m["version"] == 0 and m["step"] == 1


def test_onpolicy_distill_scores_every_student_sample(tmp_path):
    trainer, roles = make(tmp_path, hard_q0_q1, overrides=["algo.name=onpolicy_distill"])
    m = trainer.train_step()
    assert m["n_distill"] == 16 and len(roles.teacher.scored) == 16  # no reward filtering
    assert roles.teacher.generated == [] and roles.learner.loss_fns == ["jsd"]


def test_dynamic_sampling_drops_degenerate_groups(tmp_path):
    trainer, roles = make(tmp_path, hard_q0_q1, overrides=["algo.name=grpo", "algo.dynamic_sampling=true"])
    trainer.data.next = lambda n: [trainer.data.questions[i] for i in range(4)]
    m = trainer.train_step()
    assert m["dropped_groups"] == 3 and {it.group for it in learned(roles)} == {"plain:q1"}


def test_zppo_ds_drops_a_question_only_when_all_its_groups_are_degenerate(tmp_path):
    """q0 and q1 fail every plain rollout; q0's BCQ group has a signal, q1's reformulations do not: q0 keeps
    its all-wrong plain group, q1 and the all-right q2, q3 lose theirs."""
    def script(kind, qid, step):
        if kind == "plain":
            return [qid not in ("q0", "q1")] * 4
        return [qid == "q0" and i == 0 for i in range(4)]

    trainer, roles = make(tmp_path, script, overrides=["algo.name=zppo_ds"])
    trainer.data.next = lambda n: [trainer.data.questions[i] for i in range(4)]
    m = trainer.train_step()
    groups = {it.group for it in learned(roles)}
    assert {g for g in groups if g.startswith("plain:")} == {"plain:q0"}
    assert groups - {"plain:q0"} and all(g.split(":")[0] in ("bcq", "ncq") for g in groups - {"plain:q0"})
    assert m["dropped_groups"] >= 3 and m["n_bcq"] >= 1


def test_overlong_samples_lose_their_loss_tokens(tmp_path):
    trainer, roles = make(tmp_path, hard_q0_q1, overrides=["algo.name=grpo", "algo.overlong_filter=true"])
    for_length = FakeRollout._one

    def one(self, req):
        out = for_length(self, req)
        out[0].finish_reason = "length"
        return out

    roles.rollout._one = one.__get__(roles.rollout)
    trainer.train_step()
    items = learned(roles)
    assert sum(1 for it in items if it.loss_mask == [0, 0]) == 4  # the first sample of each of 4 groups


def test_unknown_algorithm_is_refused_up_front(tmp_path):
    with pytest.raises(ValueError, match="unknown algorithm 'nope'"):
        make(tmp_path, all_right, overrides=["algo.name=nope"])


def test_a_skipped_question_leaves_the_step_and_the_ledger_says_so(tmp_path):
    """The pool returns [] for a request it could not process (retried alone, then skipped): the question
    must not read as accuracy 0 (it would be admitted as hard), and the ledger must count it, not lose it."""
    def script(kind, qid, step):
        return [False] * 4 if qid == "q1" else [True] * 4

    trainer, roles = make(tmp_path, script)
    trainer.data.next = lambda n: [trainer.data.questions[i] for i in range(4)]
    real = roles.rollout._one
    roles.rollout._one = lambda req: [] if req.tag == "plain:q2" else real(req)
    m = trainer.train_step()
    assert m["n_skipped"] == 1 and m["n_prompts"] == 4
    assert m["admitted"] == 1 and roles.buffer.ids() == ["q1"]  # q1 is hard; q2 is not admitted
    assert "plain:q2" not in {it.group for mb in roles.learner.minibatches for it in mb}
    c = trainer.ledger.counts()
    assert c["skipped"] == 1 and c["in_buffer"] == 1 and c["trained"] == 2 and c["in_flight"] == 0
    assert trainer.ledger.state["q2"] == "skipped"


# ------------------------------------------------------------------------------ correctness to the paper (#11)


@pytest.mark.parametrize("refused", [(), ("teacher",), ("student",), ("teacher", "student")])
def test_the_two_candidates_of_a_bcq_always_have_the_same_form(tmp_path, refused):
    """A compression fallback must never put a clean teacher summary next to a raw student fragment: the
    student could pick the right candidate by its look alone. Every combination of fallbacks."""
    trainer, roles = make(tmp_path, hard_q0_q1, overrides=["algo.name=grpo_buffer_bcq"])
    trainer.data.next = lambda n: [trainer.data.questions[i] for i in range(4)]
    correct = {answer(True, "0"), answer(True, "1")}  # the teacher's candidates (the FakeTeacher's text)
    roles.teacher.refuse = lambda c: ("teacher" if c in correct else "student") in refused
    m = trainer.train_step()
    bcqs = [p for _, k, _, p in roles.rollout.requests if k == "bcq"]
    assert len(bcqs) == 2
    for p in bcqs:
        blocks = p.split("<candidate>\n")[1:]
        summarised = [b.startswith("compressed<") for b in blocks]
        assert summarised == [not refused] * 2  # both summaries, or both raw-truncated
        if refused:
            assert all("\\boxed{" in b for b in blocks)  # raw truncation keeps the final-answer line
    assert m["raw_instances"] == (2 if refused else 0)
    assert m["compress_fallbacks"] == 2 * len(refused)


def test_compression_starts_per_chunk_and_nothing_is_compressed_twice(tmp_path):
    trainer, roles = make(tmp_path, hard_q0_q1, overrides=["trainer.plain_chunks=2"])
    m = trainer.train_step()
    t = roles.teacher
    early = [x for call in t.early for x in call]
    assert m["n_bcq"] and m["n_ncq"] and early and all(x.endswith("{wrong}") for x in early)  # wrong rollouts
    later = t.compressed[len(early):]  # asked for at step 6: what the chunks could not know (teacher candidates)
    assert later and not set(later) & set(early) and not any(x.endswith("{wrong}") for x in later)


def test_compression_off_shows_every_candidate_raw_truncated(tmp_path):
    trainer, roles = make(tmp_path, hard_q0_q1, overrides=["teacher.compress=false", "teacher.compress_max_lines=1"])
    trainer.data.next = lambda n: [trainer.data.questions[i] for i in range(4)]
    m = trainer.train_step()
    assert roles.teacher.compressed == [] and m["compress_fallbacks"] == 0
    bcq = next(p for _, k, _, p in roles.rollout.requests if k == "bcq")
    # one line kept per candidate (the cap), and it is the final-answer line, not "<think>work</think>"
    assert bcq.count("<candidate>\n\\boxed{") == 2 and "<think>work" not in bcq.split("<candidate>", 2)[2]


def test_a_skipped_hint_item_drops_that_hint_instead_of_crashing(tmp_path):
    trainer, roles = make(tmp_path, hard_q0_q1, overrides=["algo.name=hint"])
    trainer.data.next = lambda n: [trainer.data.questions[i] for i in range(4)]
    real = roles.teacher.generate
    roles.teacher.generate = lambda reqs, s: [[] if r.tag == "hint:q0" else out
                                             for r, out in zip(reqs, real(reqs, s))]
    m = trainer.train_step()
    assert [q for _, k, q, _ in roles.rollout.requests if k == "hint"] == ["q1"] and m["n_hint"] == 1


def test_service_calls_run_without_thinking_and_student_prompts_with_it(tmp_path):
    trainer, roles = make(tmp_path, hard_q0_q1, overrides=["algo.name=hint"])
    seen = []
    real = roles.teacher.generate
    roles.teacher.generate = lambda reqs, s: (seen.extend(reqs), real(reqs, s))[1]
    trainer.train_step()
    assert seen and all(r.tag.startswith("hint:") and r.thinking is False for r in seen)


def test_no_two_samples_of_a_run_share_a_seed(tmp_path):
    """vLLM seeds sample j of a request with seed + j. Per-request seeds base + i made sample j+1 of request
    i collide with sample j of request i+1, and chunk k+1 repeat chunk k shifted by one."""
    calls = []

    class SeedRollout(FakeRollout):
        def generate_async(self, requests, sampling):
            calls.append((self.step, [r.n for r in requests], sampling["seed"]))
            return super().generate_async(requests, sampling)

        def generate(self, requests, sampling):
            calls.append((self.step, [r.n for r in requests], sampling["seed"]))
            return super().generate(requests, sampling)

    trainer, roles = make(tmp_path, hard_q0_q1, overrides=["trainer.plain_chunks=2"])
    roles.rollout.__class__ = SeedRollout
    for _ in range(3):
        trainer.train_step()
    per_sample = [s + j for _, ns, seeds in calls for n, s in zip(ns, seeds) for j in range(n)]
    assert len(calls) >= 6 and len(per_sample) == len(set(per_sample))
    # a resumed step draws what the uninterrupted one drew: seeds depend on (step, role, request) only
    again, _ = make(tmp_path, hard_q0_q1)
    reqs = again._plain_requests(again.data.questions[:2], 4)
    assert again._seeds("student", reqs, 2) == trainer._seeds("student", reqs, 2)
    assert again._seeds("student", reqs, 2) != trainer._seeds("student", reqs, 1)


def test_replay_buffer_uses_its_own_random_stream():
    from zppo_ray.seeds import derive_seed

    assert derive_seed(0, "buffer") != 0 and derive_seed(0, "buffer") == derive_seed(0, "buffer")
    assert derive_seed(0, 1, "student", "plain:q1") != derive_seed(0, 1, "teacher", "plain:q1")


@pytest.mark.parametrize("algo", ["offpolicy_distill", "onpolicy_distill"])
def test_distillation_with_the_buffer_admits_replays_and_graduates(tmp_path, algo):
    """Off-Distill† / On-Distill†: `algo.use_buffer=true` was accepted and silently ignored."""
    def script(kind, qid, step):  # q0 hard at step 0, solved from step 1 on
        return [step >= 1 or qid != "q0"] * 4

    trainer, roles = make(tmp_path, script, overrides=[f"algo.name={algo}", "algo.use_buffer=true"])
    m1 = trainer.train_step()
    assert m1["admitted"] == 1 and roles.buffer.ids() == ["q0"]
    m2 = trainer.train_step()
    assert m2["n_replay"] == 1 and m2["graduated"] == 1 and m2["buffer_size"] == 0
    assert trainer.ledger.counts()["graduated"] == 1
    if algo == "offpolicy_distill":  # the plain student rollouts feed the buffer, never the loss
        assert all(it.teacher_topk_ids is not None for it in learned(roles))


def test_distillation_without_the_buffer_samples_no_student_rollouts(tmp_path):
    trainer, roles = make(tmp_path, all_right, overrides=["algo.name=offpolicy_distill"])
    trainer.train_step()
    assert roles.rollout.requests == [] and roles.buffer.size() == 0


def test_images_travel_with_every_train_item_and_to_the_teacher_scorer(tmp_path):
    import dataclasses

    trainer, roles = make(tmp_path, hard_q0_q1)
    trainer.data.questions[:] = [dataclasses.replace(q, images=(f"/img/{q.id}.png",)) for q in trainer.data.questions]
    trainer.data.next = lambda n: [trainer.data.questions[i] for i in range(4)]
    trainer.train_step()
    items = learned(roles)
    assert items and all(it.images == (f"/img/{it.group.split(':', 1)[1]}.png",) for it in items)
    assert {it.group.split(":")[0] for it in items} >= {"plain", "bcq", "ncq"}

    trainer, roles = make(tmp_path, all_right, overrides=["algo.name=onpolicy_distill"])
    trainer.data.questions[:] = [dataclasses.replace(q, images=(b"png-bytes",)) for q in trainer.data.questions]
    trainer.train_step()  # used to raise "does not support questions with images"
    assert roles.teacher.scored_images and all(i == (b"png-bytes",) for i in roles.teacher.scored_images)
    assert all(it.images == (b"png-bytes",) for it in learned(roles))


def test_mixed_versions_in_one_generate_call_are_a_real_error():
    """It was an `assert`, which `python -O` removes."""
    from types import SimpleNamespace

    from zppo_ray.actors.rollout import MixedVersionError, PendingGenerate, RolloutPool

    pool = RolloutPool.__new__(RolloutPool)
    pool._lock, pool._pending = threading.Lock(), []
    pool._changed = threading.Condition(pool._lock)
    mixed = [[Sample([1], [2], [0.0], "a", "stop", version=1)], [Sample([1], [2], [0.0], "b", "stop", version=2)]]
    pool.replicas = SimpleNamespace(gather=lambda g: mixed)
    with pytest.raises(MixedVersionError, match=r"versions \[1, 2\]"):
        pool.collect(PendingGenerate(gather=None, version=1))


def test_colocated_engines_sleep_for_the_learner_and_wake_in_vllms_order(tmp_path):
    calls = []

    class Colocated(FakeRollout):
        def sleep(self, level=1):
            calls.append("sleep")

        def wake_up(self, tags=None):
            calls.append(f"wake:{','.join(tags)}")

    class Weights(FakeWeights):
        def push(self, version, rollback=False):
            calls.append("push")
            return super().push(version, rollback)

    class Learner(FakeLearner):
        def train_minibatch(self, items, loss_fn=None):
            calls.append("learn")
            return super().train_minibatch(items, loss_fn)

    trainer, roles = make(tmp_path, hard_q0_q1, overrides=["rollout.colocate_with_learner=true"])
    roles.rollout.__class__, roles.learner.__class__, roles.weights.__class__ = Colocated, Learner, Weights
    trainer.train_step()
    assert calls == ["sleep", "learn", "learn", "learn", "learn", "wake:weights", "push", "wake:kv_cache"]
    calls.clear()
    other, roles = make(tmp_path, hard_q0_q1)  # not colocated: the engines never sleep
    roles.rollout.__class__, roles.learner.__class__, roles.weights.__class__ = Colocated, Learner, Weights
    other.train_step()
    assert "sleep" not in calls and calls[-1] == "push"


def test_the_controller_pushes_versions_only_and_records_the_push(tmp_path):
    """The weights go from the learner to the engines by the weight sync; the trainer passes a version."""
    trainer, roles = make(tmp_path, hard_q0_q1)
    m1, m2 = trainer.train_step(), trainer.train_step()
    assert roles.weights.pushed == [1, 2] == [m1["version"], m2["version"]] and trainer.last_push_bytes == 123


def test_periodic_evaluation_scores_through_the_harness_per_tier(tmp_path):
    """One scoring path: the trainer's evaluation is the harness's (eval/harness.score_questions)."""
    def script(kind, qid, step):
        return [qid == "q0"] * 4 if kind == "eval" else [True] * 4

    trainer, roles = make(tmp_path, script, overrides=["eval.num_samples=4"])
    import dataclasses

    trainer.eval_questions = [dataclasses.replace(q, tier=t) for q, t in zip(trainer.data.questions[:3], "112")]
    acc = trainer.evaluate("before")
    assert acc == {"1": 0.5, "2": 0.0, "all": 1 / 3}
    assert [r[1] for r in roles.rollout.requests] == ["eval"] * 3
    real = roles.rollout._one
    roles.rollout._one = lambda req: [] if req.tag.endswith(":q1") else real(req)  # the pool skipped q1
    assert trainer.evaluate("after") == {"1": 1.0, "2": 0.0, "all": 0.5}


def test_evaluation_breaks_down_by_the_skill_group_a_world_tags(tmp_path):
    def script(kind, qid, step):
        return [qid == "q0"] * 4

    trainer, _ = make(tmp_path, script, overrides=["eval.num_samples=4"])
    import dataclasses

    trainer.eval_questions = [dataclasses.replace(q, extra={"skill_group": g})
                              for q, g in zip(trainer.data.questions[:3], ["known", "missing", "missing"])]
    assert trainer.evaluate("before") == {"1": 1 / 3, "all": 1 / 3, "skill:known": 1.0, "skill:missing": 0.0}


# ------------------------------------------------------------------------- asynchronous rollouts


class GatedLearner(FakeLearner):
    """Holds every update until the background thread asked the rollout pool for the next step's rollouts,
    so the overlap (and with it the samples' lag) does not depend on thread timing."""

    def __init__(self, rollout):
        super().__init__()
        self.rollout, self.next_step_sampling, self.ages = rollout, threading.Event(), []

    def compute_logprobs(self, items):
        self.ages.append([self.rollout.version - it.version for it in items])
        return super().compute_logprobs(items)


def make_async(tmp_path, script=None, steps=4, extra=(), n_questions=8):
    trainer, roles = make(tmp_path, script or hard_q0_q1, overrides=[
        "trainer.max_staleness=1", "algo.tis_cap=2", f"trainer.steps={steps}", *extra], n_questions=n_questions)
    learner = GatedLearner(roles.rollout)
    roles.learner = trainer.roles.learner = learner
    rollout, plain_async, train = roles.rollout, roles.rollout.generate_async, learner.train_minibatch

    def generate_async(requests, sampling):
        if threading.current_thread() is not threading.main_thread():
            learner.next_step_sampling.set()
        return plain_async(requests, sampling)

    def gated(items, loss_fn=None):
        if trainer.ahead.in_flight:
            assert learner.next_step_sampling.wait(timeout=10), "the next step's rollouts never started"
        return train(items, loss_fn)

    def push(version, rollback=False):
        learner.next_step_sampling.clear()
        return weights_push(version, rollback)

    rollout.generate_async, learner.train_minibatch = generate_async, gated
    weights_push, roles.weights.push = roles.weights.push, push
    return trainer, roles, learner


def test_async_rollouts_train_one_version_behind_with_versions_and_weights_recorded(tmp_path):
    trainer, roles, learner = make_async(tmp_path)
    try:
        metrics = [trainer.train_step() for _ in range(4)]
    finally:
        trainer.close()
    assert roles.weights.pushed == [1, 2, 3, 4]
    # step 1 sampled with version 0 and trained at 0; every later step's plain rollouts ran while the step
    # before trained, on the weights before its push: one version behind, never more
    assert set(learner.ages[0]) == {0}
    assert all(max(a) == 1 for a in learner.ages[1:]) and max(max(a) for a in learner.ages) == 1
    assert [m["learn"]["sample_age_max"] for m in metrics] == [0, 1, 1, 1]
    assert all(m["learn"]["n_stale"] == 0 for m in metrics)
    items = [it for mb in learner.minibatches for it in mb]
    assert all(it.is_weights is not None and len(it.is_weights) == len(it.completion_ids) for it in items)
    # the fake engine's logprobs are -0.1/-0.2, the fake learner's -0.1: w = min(exp(-0.1 + 0.2), 2) on token 2
    assert items[0].is_weights == pytest.approx([1.0, math.exp(0.1)])
    assert all(m["time"]["idle_learner"] >= 0 and "idle_rollout" in m["time"] for m in metrics)
    assert trainer.ledger.counts()["in_flight"] == 0 and not trainer.ahead.in_flight


def test_async_mode_never_produces_past_the_last_step_nor_replays_a_question_in_flight(tmp_path):
    """q0 and q1 stay hard and keep being replayed; each step is drawn while the step before (maybe replaying
    them) trains. The draw may return a question in flight; it must not be served twice at once."""
    trainer, roles, learner = make_async(tmp_path, steps=4, n_questions=16)
    draws, replays = [], []
    sample, produce = roles.buffer.sample, trainer._rollouts

    def spy_sample(k):
        drawn = sample(k)
        draws.append(({q.id for q in drawn}, trainer.ledger.in_flight()))
        return drawn

    def spy_produce(step):
        s = produce(step)
        replays.append((s.at + 1, {q.id for q in s.replay}))
        return s

    roles.buffer.sample, trainer._rollouts = spy_sample, spy_produce
    try:
        for _ in range(4):
            trainer.train_step()
    finally:
        trainer.close()
    assert [n for n, _ in replays] == [1, 2, 3, 4]  # nothing produced for a fifth step
    assert trainer.data.epoch * 16 + trainer.data.cursor == 16  # 4 steps of 4 new questions
    # the draws for steps 2-4 happen while the step before is in flight; at least one returned a question of it
    assert any(drawn & busy for drawn, busy in draws)
    assert all(not (replayed & busy) for (_, replayed), (_, busy) in zip(replays, draws))
    assert dict(replays)[4]  # the buffer still served what was not in flight


def test_a_checkpoint_taken_with_a_step_in_flight_resumes_by_drawing_that_step_again(tmp_path):
    """What launch.save_checkpoint saves while step 3 is being produced, then a fresh controller resumed
    from it: step 3 is drawn again and the run ends where the uninterrupted one did, nothing lost or doubled."""
    from zppo_ray.state.ledger import Ledger

    trainer, roles, learner = make_async(tmp_path, steps=4)
    try:
        for _ in range(2):
            trainer.train_step()
        assert trainer.ahead.in_flight  # step 3 is being produced
        trainer.ahead.wait()
        state, ledger, in_flight = trainer.state(), trainer.ledger.settled(), trainer.ledger.in_flight()
        roles.buffer.snapshot(str(tmp_path / "buffer"))
        trainer.train_step()
        trainer.train_step()
    finally:
        trainer.close()
    # the checkpoint: two steps trained, the data cursor and the ledger as before step 3 drew anything
    assert (state.step, state.version, state.cursor, state.epoch) == (2, 2, 8, 0)
    assert in_flight and all(st != "in_flight" for st in ledger.values())
    again, roles2, _ = make_async(tmp_path, steps=4)
    try:
        again.load_state(state)
        again.ledger = Ledger(again.ledger.state.keys(), {q: st for q, st in ledger.items() if st != "not_served"})
        roles2.buffer.restore(str(tmp_path / "buffer"))
        roles2.rollout.version = state.version  # launch.resume pushes the checkpoint's weights
        again.train_step()  # step 3, drawn again
        redrawn = {q for _, kind, q, _ in roles2.rollout.requests if kind == "plain"}
        again.train_step()
    finally:
        again.close()
    assert in_flight <= redrawn
    assert again.step == 4 and again.ledger.counts()["in_flight"] == 0
    assert (again.data.cursor, again.data.epoch) == (trainer.data.cursor, trainer.data.epoch)
    assert again.ledger.state == trainer.ledger.state
    assert sorted(roles2.buffer.ids()) == sorted(roles.buffer.ids())


def test_async_rollouts_are_refused_without_the_importance_correction_or_with_sleeping_engines():
    from zppo_ray.config import ConfigError

    with pytest.raises(ConfigError, match="algo.tis_cap"):
        load_config(None, ["trainer.max_staleness=1"])
    with pytest.raises(ConfigError, match="colocate"):
        load_config(None, ["trainer.max_staleness=1", "algo.tis_cap=2", "rollout.colocate_with_learner=true"])
    with pytest.raises(ConfigError, match="step shape"):
        load_config(None, ["trainer.max_staleness=1", "algo.tis_cap=2", "algo.name=onpolicy_distill"])
