"""Pure scoring for the evaluation harness (`zppo_ray.eval`): the unbiased pass@k estimator, one record per
question, per-benchmark and per-family aggregation, and the markdown table.

No engine and no I/O here, so every number the harness reports can be checked against brute-force
enumeration in a unit test.

Definitions (spec §6 reports pass@1 averaged over samples; pass@k is our addition):
* pass@k of one question with n samples, c correct: 1 - C(n-c, k) / C(n, k), the probability that at
  least one of k samples drawn without replacement is correct (Chen et al. 2021). pass@1 = c / n.
* A benchmark's pass@k: the mean over its questions. A family's: the mean of its benchmarks' scores
  (macro average, as the paper's family averages), so a large benchmark does not drown a small one.
* "No answer": a sample from which no final answer could be extracted (no \\boxed{} for math and
  free-form, no option letter for multiple choice). Such samples score 0 either way; they are counted
  because a high count means a format problem (or truncation), not a knowledge problem.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for n samples of which c are correct."""
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"need n >= 1 samples and 0 <= c <= n correct, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass@{k} needs 1 <= k <= n, and there are n={n} samples per question")
    # Python ints are exact and int / int is correctly rounded, so this stays accurate for large n.
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def check_ks(ks: Sequence[int], n: int) -> list[int]:
    """The sorted distinct ks, each in 1..n; the error names the bad k and n (a typo must not pass)."""
    if not ks:
        raise ValueError("give at least one k for pass@k (e.g. 1)")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if k > n:
            raise ValueError(f"pass@{k} needs at least {k} samples per question, but n={n} (raise n or drop k={k})")
    return sorted(set(ks))


def metric_names(ks: Sequence[int]) -> list[str]:
    return [f"pass@{k}" for k in ks]


@dataclass
class QuestionResult:
    """Everything graded about one question; `rewards` and `answers` are per sample, in sample order."""

    benchmark: str
    id: str
    kind: str
    gold: str
    rewards: list[float]
    answers: list[str | None]  # extracted final answer per sample; None = nothing extractable
    tier: str = ""
    truncated: int = 0  # samples that hit the token limit (finish_reason "length")
    judge_unparseable: int = 0  # free-form: judge outputs that were not a strict verdict (scored wrong)
    judge_too_long: int = 0  # free-form: judge prompts that did not fit the judge (scored wrong)

    @property
    def correct(self) -> int:
        bad = [r for r in self.rewards if r not in (0.0, 1.0)]
        if bad:  # pass@k counts correct samples: a partial reward has no meaning here
            raise ValueError(f"{self.benchmark}/{self.id}: rewards must be 0 or 1, got {bad[0]!r}")
        return int(sum(self.rewards))

    @property
    def no_answer(self) -> int:
        return sum(a is None for a in self.answers)

    def scores(self, ks: Sequence[int]) -> dict[str, float]:
        n, c = len(self.rewards), self.correct
        return {name: pass_at_k(n, c, k) for name, k in zip(metric_names(ks), ks)}

    def to_json(self, ks: Sequence[int]) -> dict:
        return dict(benchmark=self.benchmark, id=self.id, kind=self.kind, tier=self.tier, gold=self.gold,
                    rewards=self.rewards, answers=self.answers, correct=self.correct, no_answer=self.no_answer,
                    truncated=self.truncated, judge_unparseable=self.judge_unparseable,
                    judge_too_long=self.judge_too_long, **self.scores(ks))


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def benchmark_summary(name: str, results: Sequence[QuestionResult], ks: Sequence[int]) -> dict:
    """Mean pass@k over the benchmark's questions, and the counts that explain a low score."""
    if not results:
        raise ValueError(f"benchmark {name!r} has no questions")
    per_q = [r.scores(ks) for r in results]
    out: dict = {"questions": len(results), "samples": sum(len(r.rewards) for r in results)}
    out.update({m: _mean([s[m] for s in per_q]) for m in metric_names(ks)})
    out["no_answer_samples"] = sum(r.no_answer for r in results)
    out["no_answer_questions"] = sum(r.no_answer > 0 for r in results)  # at least one sample without answer
    out["truncated_samples"] = sum(r.truncated for r in results)
    out["judge_unparseable"] = sum(r.judge_unparseable for r in results)
    out["judge_too_long"] = sum(r.judge_too_long for r in results)
    return out


def check_families(families: Mapping[str, Sequence[str]], benchmarks: Sequence[str]) -> dict[str, list[str]]:
    """Families as {name: [benchmark, ...]}; every member must be an evaluated benchmark."""
    out = {}
    for fam, members in families.items():
        if not members:
            raise ValueError(f"family {fam!r} names no benchmark")
        unknown = [b for b in members if b not in benchmarks]
        if unknown:
            raise ValueError(f"family {fam!r}: unknown benchmark(s) {unknown}; evaluated: {', '.join(benchmarks)}")
        out[fam] = list(dict.fromkeys(members))  # a benchmark listed twice must not count twice
    return out


def family_summary(benchmarks: Mapping[str, dict], families: Mapping[str, Sequence[str]],
                   ks: Sequence[int]) -> dict[str, dict]:
    """Each family's pass@k = the mean of its benchmarks' pass@k."""
    families = check_families(families, list(benchmarks))
    return {fam: {"benchmarks": members,
                  **{m: _mean([benchmarks[b][m] for b in members]) for m in metric_names(ks)}}
            for fam, members in families.items()}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown_table(benchmarks: Mapping[str, dict], families: Mapping[str, dict], ks: Sequence[int]) -> str:
    """Benchmarks, then families, as GitHub markdown; scores in percent."""
    names = metric_names(ks)
    lines = ["| benchmark | questions | " + " | ".join(names) + " | no answer (samples) | truncated |",
             "|---|---:|" + "---:|" * len(names) + "---:|---:|"]
    for b, s in benchmarks.items():
        cells = " | ".join(_pct(s[m]) for m in names)
        lines.append(f"| {b} | {s['questions']} | {cells} | {s['no_answer_samples']}/{s['samples']} "
                     f"| {s['truncated_samples']} |")
    if families:
        lines += ["", "| family | benchmarks | " + " | ".join(names) + " |", "|---|---|" + "---:|" * len(names)]
        for f, s in families.items():
            cells = " | ".join(_pct(s[m]) for m in names)
            lines.append(f"| {f} | {', '.join(s['benchmarks'])} | {cells} |")
    return "\n".join(lines) + "\n"
