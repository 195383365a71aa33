"""The short chaos run (benchmarks/chaos.py): kill one actor of every role and the driver while the toy world
trains, then require the run to complete and the audit to account for every question."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_toy_run_survives_a_kill_of_every_role_and_loses_no_question(tmp_path, toy_world):
    spec = importlib.util.spec_from_file_location("chaos", ROOT / "benchmarks" / "chaos.py")
    chaos = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chaos)
    result = chaos.run_chaos(steps=6, plan=["rollout", "buffer", "learner", "teacher", "driver-term"],
                             out=tmp_path, checkpoint_every=2, max_reruns=2, timeout=900,
                             overrides=("rollout.num_workers=2",))
    print(chaos.report(result, ["(test)"]))
    assert [k.get("pid") is not None for k in result["kills"]] == [True] * 5, result["kills"]
    assert result["completed"], (result["job_exits"], (tmp_path / "job.log").read_text()[-3000:])
    assert result["audit"]["ok"], result["audit"]["problems"]
    assert result["job_exits"] == [143, 0]  # SIGTERM: a checkpoint, exit 143; the rerun resumed and finished
    rec = result["recoveries"]
    assert rec["rollout/teacher replaced"] >= 2 and rec["buffer rebuilt"] == 1 and rec["learner rolled back"] == 1
    assert sum(result["audit"]["counts"].values()) == 600
