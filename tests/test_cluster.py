"""The distributed shape, run for real on one machine: three Ray nodes started with `ray start` on the
loopback address (benchmarks/chaos.py THREE_NODES), each offering its own custom resource, and a ZPPO run of
the toy world placed on them by its `placement` section: the buffer on the head, the teacher with tensor
parallelism 2 on node a, the two rollout workers on node b, two ZeRO-3 learner ranks spread over a and b.
Mid-run node b is lost (its raylet killed) and a node with the same resources joins 10 s later, as KubeRay
replaces a lost pod: the run must finish by the recovery paths that exist and the audit must pass."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _chaos():
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "benchmarks" / "chaos.py")
    chaos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chaos)
    return chaos


@pytest.mark.slow
def test_three_nodes_tp2_teacher_zero3_learner_across_nodes_survive_losing_a_node(tmp_path, toy_world):
    chaos = _chaos()
    result = chaos.run_chaos(steps=6, plan=["node:b"], out=tmp_path, checkpoint_every=2, max_reruns=1, timeout=1500,
                             overrides=chaos.THREE_NODE_CONFIG, nodes=chaos.THREE_NODES)
    print(chaos.report(result, ["(test)"]))
    log = (tmp_path / "job.log").read_text()
    assert result["kills"] and result["kills"][0].get("pid"), result["kills"]
    assert result["completed"], (result["job_exits"], log[-3000:])
    assert result["audit"]["ok"], result["audit"]["problems"]
    assert result["job_exits"] == [0]  # survived inside the run: no rerun needed
    rec = result["recoveries"]
    assert rec["rollout/teacher replaced"] >= 2 and rec["learner rolled back"] == 1, rec

    # Placement as the config asked: at the start, and again after the learner group was rebuilt.
    records = [json.loads(x) for x in (tmp_path / "run" / "placement.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "learner rebuilt"]
    first, rebuilt = records[0]["roles"], records[1]["roles"]
    node_with = {res: {e["node"] for role in first.values() for e in role if res in e["node_resources"]}
                 for res in ("zppo_head", "zppo_a", "zppo_b")}
    assert all(len(v) == 1 for v in node_with.values()), node_with
    (head,), (a,), (b,) = node_with["zppo_head"], node_with["zppo_a"], node_with["zppo_b"]
    assert [e["node"] for e in first["buffer"]] == [head]
    assert [e["node"] for e in first["teacher"]] == [a] and first["teacher"][0]["bundles"] == [a, a]  # TP=2
    assert [e["node"] for e in first["rollout"]] == [b, b]
    assert sorted(e["node"] for e in first["learner"]) == sorted([a, b])  # ZeRO-3 ranks on two nodes
    # node b's replacement is a new node with the same resources; the rebuilt ranks spread over a and it
    new_b = {e["node"] for e in rebuilt["learner"]} - {a}
    assert len(new_b) == 1 and new_b != {b} and {a} <= {e["node"] for e in rebuilt["learner"]}
    assert all("zppo_b" in e["node_resources"] for e in rebuilt["learner"] if e["node"] in new_b)
