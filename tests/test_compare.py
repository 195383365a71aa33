"""The method-comparison numbers (zppo_ray/eval/compare.py) on hand-written run directories."""

import json

import pytest

from zppo_ray.eval.compare import (
    bin_table,
    claims_table,
    curve_table,
    entry_bin,
    graduation,
    markdown_table,
    method_row,
    read_run,
)


def fate(entry, fate_, visits=1):
    return {"kind": "fate", "entry_accuracy": entry, "fate": fate_, "visits": visits}


def write_run(d, after, seconds, fates=(), steps=()):
    d.mkdir(parents=True)
    rows = [{"kind": "eval", "step": 0, "label": "before", "accuracy": {"1": 0.5, "all": 0.5}}]
    rows += [{"kind": "step", "step": i, **s} for i, s in enumerate(steps, 1)] + list(fates)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "summary.json").write_text(json.dumps({"eval_before": {"1": 0.5, "all": 0.5}, "eval_after": after,
                                                "train_seconds": seconds}))
    return d


def test_entry_bins_and_graduation_rates():
    assert entry_bin(0.0, 8) == "0/8" and entry_bin(0.375, 8) == "3/8" and entry_bin(0.25, 4) == "1/4"
    g = graduation([fate(0.0, "evicted", 4), fate(0.0, "graduated", 1), fate(0.125, "graduated", 2)], 8)
    assert (g["graduated"], g["evicted"], g["rate"]) == (2, 1, pytest.approx(2 / 3))
    assert g["visits"] == {"graduated": 1.5, "evicted": 4.0}
    assert g["by_bin"]["0/8"]["rate"] == 0.5 and g["by_bin"]["1/8"]["rate"] == 1.0
    assert graduation([], 8)["rate"] is None  # nothing left the buffer: no rate, not 0
    assert graduation([], 8)["visits"] == {"graduated": None, "evicted": None}


def test_method_row_averages_seeds_and_weights_bcq_by_groups(tmp_path):
    steps_a = [{"n_bcq": 2, "bcq_reward": 0.5, "n_ncq": 0, "ncq_reward": 0.0, "pos_adv_frac": 0.2,
                "learn": {"entropy": 0.5}}, {"n_bcq": 0, "bcq_reward": 0.0, "pos_adv_frac": 0.4, "learn": {}}]
    a = write_run(tmp_path / "a", {"1": 0.6, "all": 0.6}, 100, [fate(0.0, "graduated")], steps_a)
    b = write_run(tmp_path / "b", {"1": 0.8, "all": 0.8}, 120, [fate(0.0, "evicted")],
                  [{"n_bcq": 1, "bcq_reward": 1.0}])
    row = method_row([read_run(a), read_run(b)], 8)
    assert row["after"]["all"] == (pytest.approx(0.7), pytest.approx(0.1))
    assert row["bcq_accuracy"] == pytest.approx((2 * 0.5 + 1 * 1.0) / 3)  # an empty step is not a 0
    assert row["ncq_accuracy"] is None and row["graduation"]["rate"] == 0.5
    assert row["train_seconds"] == (110, 10)
    assert row["pos_adv_frac"] == pytest.approx(0.3) and row["entropy"] == 0.5  # steps that logged them


def test_tables_show_ratio_to_the_baseline_and_bins(tmp_path):
    base = method_row([read_run(write_run(tmp_path / "g", {"1": 0.5, "all": 0.5}, 100))], 8)
    z = method_row([read_run(write_run(tmp_path / "z", {"1": 0.7, "all": 0.7}, 150,
                                       [fate(0.125, "graduated")]))], 8)
    table = markdown_table({"grpo": base, "zppo": z})
    assert "| zppo | 1 | 70.0 ± 0.0 | 70.0 ± 0.0 | 1 | 0 | 100% | 1.0 / – | – | – | – | – | 150 ± 0 | 1.50 |" in table
    assert "| grpo | 1 | 50.0 ± 0.0 | 50.0 ± 0.0 | 0 | 0 | – | – / – |" in table
    bins = bin_table({"grpo": base, "zppo": z})
    assert "| entry accuracy | zppo |" in bins and "| 1/8 | 100% (1/1) |" in bins


def test_curve_table_lists_every_evaluation_step(tmp_path):
    d = write_run(tmp_path / "z", {"1": 1.0, "all": 1.0}, 10)
    with (d / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"kind": "eval", "step": 5, "label": "step 5", "accuracy": {"all": 0.8}}) + "\n")
    row = method_row([read_run(d)], 8)
    assert list(row["curves"]["all"]) == [0, 5] and row["curves"]["all"][5] == (0.8, 0.0)
    assert list(row["curves"]["1"]) == [0]  # step 5 logged no tier 1
    assert "| zppo | 50.0 | 80.0 |" in curve_table({"zppo": row})


def test_a_resumed_run_replaces_what_the_abandoned_attempt_logged(tmp_path):
    """A crash after step 5 with a checkpoint at step 3: steps 4-5, their evaluation and their buffer fates
    are logged again by the resumed run, which is the history that counts."""
    rows = [{"kind": "eval", "step": 0, "label": "before", "accuracy": {"all": 0.1}}]
    rows += [{"kind": "step", "step": s, "attempt": 1} for s in (1, 2, 3, 4, 5)]
    rows += [{"kind": "fate", "step": 4, "qid": "lost"}, {"kind": "eval", "step": 4, "label": "step 4",
                                                          "accuracy": {"all": 0.9}}]
    rows += [{"kind": "step", "step": s, "attempt": 2} for s in (4, 5, 6)]
    rows += [{"kind": "fate", "step": 5, "qid": "kept"}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = read_run(tmp_path)
    assert [(s["step"], s["attempt"]) for s in run["steps"]] == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
    assert [f["qid"] for f in run["fates"]] == ["kept"]
    assert [e["label"] for e in run["evals"]] == ["before"]
    assert run["summary"] is None


def test_a_torn_line_is_only_forgiven_at_the_end(tmp_path):
    good = json.dumps({"kind": "step", "step": 1})
    (tmp_path / "metrics.jsonl").write_text(good + "\n" + '{"kind": "st')
    assert len(read_run(tmp_path)["steps"]) == 1
    (tmp_path / "metrics.jsonl").write_text('{"kind": "st\n' + good + "\n")
    with pytest.raises(ValueError, match="metrics.jsonl line 1 is not JSON"):
        read_run(tmp_path)


def test_skill_groups_get_their_own_columns_after_the_tiers(tmp_path):
    row = method_row([read_run(write_run(tmp_path / "z", {"1": 0.7, "all": 0.7, "skill:missing": 0.2,
                                                          "skill:known": 0.9}, 10))], 8)
    head = markdown_table({"zppo": row}).splitlines()[0]
    assert head.startswith("| method | seeds | tier 1 % | all % | known skill % | missing skill % | graduated |")


def test_claims_table_sets_each_paper_claim_against_the_runs(tmp_path):
    def row(name, acc, missing, fates_=()):
        return method_row([read_run(write_run(tmp_path / name, {"all": acc, "skill:missing": missing}, 10,
                                              list(fates_)))], 8)

    rows = {"grpo": row("grpo", 0.80, 0.30),
            "grpo_buffer": row("grpo_buffer", 0.79, 0.31, [fate(0.0, "graduated"), fate(0.0, "evicted"),
                                                           fate(0.0, "evicted"), fate(0.0, "evicted")]),
            "grpo_bcq_ncq": row("grpo_bcq_ncq", 0.80, 0.30),
            "zppo": row("zppo", 0.84, 0.40, [fate(0.0, "graduated"), fate(0.0, "evicted")])}
    table = claims_table(rows)
    assert "here: all held-out | here: missing skill held-out |" in table
    assert "| 2.0× (50% (1/2) vs 25% (1/4)) |" in table
    assert "ZPPO 50% (1/2) vs GRPO† 25% (1/4)" in table
    assert "buffer -1.0, reformulation +0.0, both +4.0 points over GRPO: super-additive" in table
    assert "| zppo 84.0 ± 0.0 > grpo_buffer 79.0 ± 0.0 [yes] > grpo 80.0 ± 0.0 [no] |" in table
    assert "| BCQ matters more than NCQ for small students | – | – |" in table  # those methods did not run
