"""The chaos run on the distributed shape (benchmarks/chaos.py): three Ray nodes started with `ray start` on the
loopback address (THREE_NODES), each offering its own custom resource, and a ZPPO run of the toy world placed on
them by its `placement` section: the buffer on the head, the teacher with tensor parallelism 2 on node a, the two
rollout workers on node b, two ZeRO-3 learner ranks spread over a and b. While it trains, one actor of every
role is killed, then the driver gets SIGTERM (the preemption notice: it checkpoints and exits, and the rerun
resumes), then node b is lost (its raylet killed; a node with the same resources joins 10 s later, as KubeRay
replaces a lost pod). The run must finish by the
recovery paths that exist and the audit must account for every question.

One run for what were two (a one-node chaos run and a three-node run): each start of a cluster and its roles
costs minutes on 2 cores, and every assertion of both holds on the three-node run."""

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# The driver's SIGTERM comes before the node loss: each incarnation meets what one of the two earlier runs met
# (the kills of each role; the lost node), within the restart budgets a run has (trainer.learner_restarts,
# rollout.max_restarts), which the two learner losses and three rollout losses of one incarnation would exceed.
PLAN = ["rollout", "buffer", "learner", "teacher", "driver-term", "node:b"]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_three_nodes_survive_a_kill_of_every_role_a_lost_node_and_preemption(tmp_path, toy_world):
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "benchmarks" / "chaos.py")
    chaos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chaos)
    result = chaos.run_chaos(steps=10, plan=PLAN, out=tmp_path, checkpoint_every=2, max_reruns=2, timeout=1500,
                             overrides=chaos.THREE_NODE_CONFIG, nodes=chaos.THREE_NODES)
    print(chaos.report(result, ["(test)"]))
    assert [k["target"] for k in result["kills"]] == PLAN
    assert [k.get("pid") is not None for k in result["kills"]] == [True] * len(PLAN), result["kills"]
    assert result["completed"], (result["job_exits"], (tmp_path / "job.log").read_text()[-3000:])
    assert result["audit"]["ok"], result["audit"]["problems"]
    assert sum(result["audit"]["counts"].values()) == 600  # every training question has a fate
    # SIGTERM: a checkpoint, exit 143; the rerun resumed, lost node b and finished. Every loss but the
    # preemption (each role, the node) was survived inside the run: no other exit.
    assert result["job_exits"] == [143, 0]
    rec = result["recoveries"]
    # one replacement each for the killed rollout worker and teacher replica, two for node b's rollout workers
    assert rec["rollout/teacher replaced"] >= 4, rec
    assert rec["buffer rebuilt"] == 1, rec
    # the killed rank, then the rank lost with node b; and once more for each new group that lost a rank as it
    # started (placed on node b before Ray knew it was gone: launch.recover_learner builds another)
    retries = (tmp_path / "job.log").read_text().count("died during its start")
    assert rec["learner rolled back"] == 2 + retries, rec
    assert rec["checkpoint on SIGTERM"] == 1, rec

    # Placement as the config asked: at the start, after each rebuild of the learner group, and at the rerun.
    records = [json.loads(x) for x in (tmp_path / "run" / "placement.jsonl").read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "learner rebuilt", "start", "learner rebuilt"]
    first, rerun, after_node_loss = records[0]["roles"], records[2]["roles"], records[3]["roles"]
    node_with = {res: {e["node"] for role in first.values() for e in role if res in e["node_resources"]}
                 for res in ("zppo_head", "zppo_a", "zppo_b")}
    assert all(len(v) == 1 for v in node_with.values()), node_with
    (head,), (a,), (b,) = node_with["zppo_head"], node_with["zppo_a"], node_with["zppo_b"]
    for roles in (first, rerun):  # the rerun finds the same layout on the same nodes
        assert [e["node"] for e in roles["buffer"]] == [head]
        assert [e["node"] for e in roles["teacher"]] == [a] and roles["teacher"][0]["bundles"] == [a, a]  # TP=2
        assert [e["node"] for e in roles["rollout"]] == [b, b]
        assert sorted(e["node"] for e in roles["learner"]) == sorted([a, b])  # ZeRO-3 ranks on two nodes
    assert sorted(e["node"] for e in records[1]["roles"]["learner"]) == sorted([a, b])  # the killed rank's rebuild
    # node b's replacement is a new node with the same resources; the rebuilt ranks spread over a and it
    new_b = {e["node"] for e in after_node_loss["learner"]} - {a}
    assert len(new_b) == 1 and new_b != {b} and {a} <= {e["node"] for e in after_node_loss["learner"]}
    assert all("zppo_b" in e["node_resources"] for e in after_node_loss["learner"] if e["node"] in new_b)
