"""A peer on the same task: TRL's `GRPOTrainer` against zppo_ray's GRPO, same tiny model, same budget, this CPU.

    make bench-trl          # installs TRL into a side folder (.venv-trl/, not the project's environment)
    PYTHONPATH=.venv-trl .venv/bin/python benchmarks/trl_peer.py [--steps 6] [--out benchmarks/results/perf]

Both train the toy world's student on its training questions with the toy default's shape: 16 prompts a step,
G = 8 samples each at temperature 1, at most 128 new tokens, 4 optimizer steps a step over equal mini-batches
(TRL: per_device_train_batch_size 32, steps_per_generation 4), AdamW at 5e-5, clip 0.2 / 0.28, no KL term,
token-mean loss, binary reward from the project's grader. TRL generates with transformers (`use_vllm=False`):
its vLLM modes need a CUDA device (server) or a GPU process group (colocate). Step 1 of each is left out (it
compiles and warms caches). Writes OUT/trl_peer.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")

from perf import toy_setup  # noqa: E402
from real_model import machine  # noqa: E402

PROMPTS, G, MAX_NEW, UPDATES, LR = 16, 8, 128, 4, 5e-5


def trl_run(cfg, student: str, questions, steps: int, out: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from zppo_ray.algo.reformulate import question_prompt
    from zppo_ray.rewards import grade

    gold = {question_prompt(q.text, cfg.templates): (q.answer, q.kind) for q in questions}
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in gold])

    def reward(prompts, completions, **_):
        return [grade(c[0]["content"], *gold[p[0]["content"]]) for p, c in zip(prompts, completions)]

    class Clock(TrainerCallback):
        def __init__(self):
            self.marks = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kw):
            if state.global_step % UPDATES == 0:  # one generation batch = one zppo_ray step
                self.marks.append(time.perf_counter())

    args = GRPOConfig(output_dir=str(out / "trl_run"), learning_rate=LR, per_device_train_batch_size=PROMPTS * G // UPDATES,
                      steps_per_generation=UPDATES, num_generations=G, max_completion_length=MAX_NEW,
                      temperature=1.0, top_p=1.0, beta=0.0, epsilon=0.2, epsilon_high=0.28, loss_type="dapo",
                      max_steps=steps * UPDATES, use_vllm=False, bf16=False, fp16=False, use_cpu=True,
                      logging_steps=UPDATES, save_strategy="no", report_to=[], seed=0, shuffle_dataset=True)
    clock = Clock()
    tok = AutoTokenizer.from_pretrained(student)
    trainer = GRPOTrainer(model=student, reward_funcs=reward, args=args, train_dataset=data, processing_class=tok,
                          callbacks=[clock])
    trainer.train()
    per_step = [b - a for a, b in zip(clock.marks, clock.marks[1:])]
    rewards = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    return {"seconds_per_step": [round(x, 2) for x in per_step], "rewards": [round(r, 3) for r in rewards]}


def ours(cfg_overrides: list[str], steps: int, out: Path) -> dict:
    from zppo_ray.eval.compare import read_run
    from zppo_ray.main import run

    run_dir = out / "runs" / "grpo-peer"
    if not (run_dir / "summary.json").exists():
        run(["algo.name=grpo", f"trainer.steps={steps}", "trainer.eval_every=0", "checkpoint.every=0",
             "metrics.plots=false", f"trainer.run_dir={run_dir}", *cfg_overrides])
    r = read_run(run_dir)
    return {"seconds_per_step": [round(m["time"]["total"], 2) for m in r["steps"]],
            "rewards": [round(m["plain_reward"], 3) for m in r["steps"]]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/perf"))
    args = ap.parse_args(argv)
    import trl

    cfg, student, questions = toy_setup(None, [])
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), "trl_version": trl.__version__,
              "shape": {"prompts_per_step": PROMPTS, "group_size": G, "max_new_tokens": MAX_NEW,
                        "optimizer_steps_per_step": UPDATES, "lr": LR}}
    report["zppo_ray_grpo"] = ours([], args.steps, args.out)
    report["trl_grpo"] = trl_run(cfg, student, questions, args.steps, args.out)
    for k in ("zppo_ray_grpo", "trl_grpo"):
        s = report[k]["seconds_per_step"][1:]
        report[k]["median_s_per_step"] = round(statistics.median(s), 2)
        report[k]["samples_per_s"] = round(PROMPTS * G / statistics.median(s), 1)
    report["trl_over_zppo_ray_step_time"] = round(report["trl_grpo"]["median_s_per_step"]
                                                  / report["zppo_ray_grpo"]["median_s_per_step"], 2)
    (args.out / "trl_peer.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    from zppo_ray.cli import run_entry

    sys.exit(run_entry(main))
