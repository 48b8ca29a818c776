"""Does it learn? base model → SFT on expert demonstrations → DAPO from the SFT checkpoint,
evaluated after each stage on a train split and a held-out split that share no library.

The run is `agent-rl pipeline` (the README's main job) at benchmark size, as a subprocess, so
it is one process tree and exactly what a user would type:

  1. eval base     pass@1..k on the train and held-out task subsets (temperature 1, n samples)
  2. demos + sft   the scripted expert on --demo-libraries of the train split's libraries (default
                   3 of 4, the main job's recipe), RL on tasks of the rest, which SFT never saw
                   (--demos other-libraries); or on the rest of the train split, RL tasks left
                   out (--demos others: SFT then solves the RL tasks from the start, a flat RL
                   curve); or on the RL tasks themselves (--demos train: memorised); SFT on what
                   resolved
  3. dapo          DAPO from the SFT checkpoint on the train subset
  4. eval          after SFT and after SFT+RL, then `agent-rl compare` base / sft / sft+rl (PNG per split)
  5. RL curve      mean reward of RL's last 3 steps minus its first 3, with a bootstrap interval

The baseline is the base model in the same run. The recipe is configs/learn-cpu.yaml with the
task subsets, eval sampling and step counts set from the flags.
benchmarks/results/learning_bench-3libs-g4-2core.json is the default run (40 minutes on 2 CPU cores;
all three of issue 11's targets: RL tasks 0 → 8/8, held-out 0/16 → 8/16, RL's last 3 steps above
its first 3 outside the bootstrap interval). Earlier recipes, each missing one target:
learning_bench-other-libraries-2core.json (--demo-libraries 0 --group-size 2 --heldout-limit 4:
held-out stays 0), learning_bench-others-heldout8-2core.json (--demos others --rl-temperature 1.0
--group-size 2 --rl-steps 10: RL's rise inside the noise), learning_bench-2core.json (--demos
train --sft-steps 3 --group-size 2 --heldout-limit 4).
At 256 tokens per turn the base model's episodes run to the cap, so 8 train tasks with n=4
would take about two hours; pass@k is sampled at the RL temperature (0.7).

    python benchmarks/learning_bench.py [--tasks-limit 4] [--heldout-limit 8] [--samples 2]
        [--temperature 0.7] [--sft-steps 24] [--demos other-libraries|others|train] [--demo-libraries 3] [--group-size 4] [--rl-steps 8] [--out runs/learning-bench] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parent.parent
LABELS = {"base": "base", "sft": "sft", "rl": "sft+rl"}


def pick_tasks(tier: str, split: str, limit: int, libraries: Sequence[str] | None = None) -> list[Any]:
    """The first `limit` tasks of `builtin:<tier>:<split>` (of `libraries` only, if given),
    round-robin over its libraries (so a small subset still spans them), in a fixed order."""
    from agent_rl.train.pipeline import library, spread_over_libraries
    from envs.tasks import load_tasks

    tasks = sorted(load_tasks(split_spec(tier, split)), key=lambda t: t.instance_id)
    return spread_over_libraries([t for t in tasks if libraries is None or library(t) in libraries], limit)


def split_spec(tier: str, split: str) -> str:
    return f"builtin:{tier}:{split}" if tier else f"builtin:{split}"


def agent_rl(args: list[str], log: Path) -> float:
    """Run `agent-rl ARGS` (this tree's code), output to `log`; raise with the log's tail on failure."""
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as fh:
        done = subprocess.run([sys.executable, "-m", "agent_rl.cli", *args], cwd=REPO, env=env, stdout=fh,
                              stderr=subprocess.STDOUT)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"agent-rl {' '.join(args[:1])} failed ({done.returncode}); {log}:\n{tail}")
    return time.monotonic() - started


def pipeline_overrides(args: argparse.Namespace, out: Path) -> list[str]:
    from agent_rl.train.pipeline import write_tasks_jsonl

    demos: list[str]
    if args.demos == "other-libraries":
        # The train split's libraries in two parts: the expert demonstrates the first
        # --demo-libraries (default half), RL and the train eval use the rest, which SFT never saw
        # (as the held-out libraries). More demonstrated libraries: broader SFT, fewer RL libraries.
        from agent_rl.train.pipeline import library
        from envs.tasks import load_tasks

        everything = load_tasks(split_spec(args.tier, "train"))
        libraries = sorted({library(t) for t in everything})
        n_shown = args.demo_libraries or len(libraries) // 2
        if not 1 <= n_shown < len(libraries):
            raise SystemExit(f"--demo-libraries must be 1..{len(libraries) - 1} (the train split has {libraries})")
        shown, unseen = libraries[:n_shown], libraries[n_shown:]
        train = [t.instance_id for t in pick_tasks(args.tier, "train", args.tasks_limit, unseen)]
        demo_file = write_tasks_jsonl([t for t in everything if library(t) in shown], out / "tasks-demos-shown.jsonl")
        demos = [f"demos.tasks={demo_file}", "demos.exclude_train_tasks=false"]
    else:
        train = [t.instance_id for t in pick_tasks(args.tier, "train", args.tasks_limit)]
        demos = ([f"demos.tasks={split_spec(args.tier, 'train')}", "demos.exclude_train_tasks=true"]
                 if args.demos == "others" else ["demos.tasks=null", "demos.exclude_train_tasks=false"])
    heldout = pick_tasks(args.tier, "heldout", args.heldout_limit)
    (out / "heldout-ids.json").write_text(json.dumps([t.instance_id for t in heldout]))
    tasks_per_step = min(args.tasks_per_step or len(train), len(train))
    batch = tasks_per_step * args.group_size
    return [
        f"output_dir={out / 'pipeline'}",
        f"train.model.name={args.model}",
        f"train.tasks.source=builtin:{args.tier}:train" if args.tier else "train.tasks.source=builtin:train",
        f"train.tasks.ids={json.dumps(train)}",
        f"train.rollout.group_size={args.group_size}", f"train.rollout.tasks_per_step={tasks_per_step}",
        f"train.algorithm.mini_batch_size={batch}", f"train.algorithm.micro_batch_size={4 if batch % 4 == 0 else 1}",
        f"train.max_steps={args.rl_steps}", f"train.optim.lr={args.rl_lr}",
        *([f"train.agent.sampling.temperature={args.rl_temperature}"] if args.rl_temperature is not None else []),
        f"sft.max_steps={args.sft_steps}", f"sft.optim.lr={args.sft_lr}",
        *demos,
        f"eval.heldout_limit={args.heldout_limit}",
        f"eval.samples={args.samples}", f"eval.temperature={args.temperature}",
        # The held-out subset: the first N of the split, round-robin by library (a file keeps it exact).
        f"eval.heldout={write_tasks_jsonl(heldout, out / 'tasks-heldout.jsonl')}",
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from agent_rl.train.pipeline import STAGES

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    seconds = agent_rl(["pipeline", "--config", str(REPO / "configs" / "learn-cpu.yaml"),
                        *pipeline_overrides(args, out)], out / "pipeline.log")
    pipe = out / "pipeline"
    for split in ("train", "heldout"):
        agent_rl(["compare", *(str(pipe / f"eval-{s}-{split}") for s in STAGES), "--out", str(out / f"compare-{split}")],
                 out / f"compare-{split}.log")
    summary = json.loads((pipe / "summary.json").read_text())
    demos = json.loads((pipe / "demos" / "report.json").read_text())
    return {
        "settings": {k: v for k, v in vars(args).items() if k != "json_path"},
        "tasks": {"train": [json.loads(line)["instance_id"] for line in (pipe / "tasks-train.jsonl").read_text().splitlines()],
                  "heldout": json.loads((out / "heldout-ids.json").read_text())},
        "demos": {k: v for k, v in demos.items() if k != "rows"},
        "pass_at_k": {LABELS[stage]: {split: row["pass_at_k"] for split, row in splits.items()}
                      for stage, splits in summary["stages"].items()},
        "rl_reward_curve": summary["rl_reward_curve"],
        "compare_png": {s: str(out / f"compare-{s}" / "pass_at_k_compare.png") for s in ("train", "heldout")},
        "rl_curves_png": summary["rl_curves_png"],
        "wall_s": round(seconds, 1),
    }


def print_table(result: dict[str, Any]) -> None:
    ks = sorted({int(k) for stage in result["pass_at_k"].values() for split in stage.values() for k in split})
    print(f"{'stage':<8} {'split':<8} " + " ".join(f"{'pass@' + str(k):>8}" for k in ks))
    for stage, splits in result["pass_at_k"].items():
        for split, passk in splits.items():
            print(f"{stage:<8} {split:<8} " + " ".join(f"{passk.get(str(k), float('nan')):>8.3f}" for k in ks))
    curve = result["rl_reward_curve"]
    print("RL reward per step:", " ".join(f"{r:.2f}" for r in curve["rewards"]))
    if "diff" in curve:
        print(f"last 3 - first 3: {curve['diff']:+.3f} (95% bootstrap over {curve.get('unit', 'step')}s {curve['ci_low']:+.3f} .. {curve['ci_high']:+.3f});"
              f" rises: {curve['rises']}")
    print(f"demos: {result['demos']}  wall: {result['wall_s']:.0f}s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="base model alias or checkpoint")
    parser.add_argument("--tier", default="floor", help="difficulty tier of the splits ('' for all tiers)")
    parser.add_argument("--tasks-limit", type=int, default=4, help="train tasks")
    parser.add_argument("--heldout-limit", type=int, default=8, help="held-out tasks")
    parser.add_argument("--samples", type=int, default=2, help="eval samples per task (n of pass@k)")
    parser.add_argument("--temperature", type=float, default=0.7, help="eval sampling temperature")
    parser.add_argument("--sft-steps", type=int, default=24)
    parser.add_argument("--demos", choices=("others", "train", "other-libraries"), default="other-libraries",
                        help="others: demonstrate the rest of the train split (the RL tasks left out); train: the RL "
                             "tasks; other-libraries: --demo-libraries of the train split's libraries, RL on the rest")
    parser.add_argument("--demo-libraries", type=int, default=3,
                        help="with --demos other-libraries: how many of the train split's libraries (sorted) the "
                             "expert demonstrates; RL uses the rest (0: half; 3: the main job's)")
    parser.add_argument("--sft-lr", type=float, default=1e-4)
    parser.add_argument("--rl-steps", type=int, default=8)
    parser.add_argument("--rl-lr", type=float, default=1e-5)
    parser.add_argument("--rl-temperature", type=float, default=None,
                        help="RL rollout temperature (default: the recipe's)")
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--tasks-per-step", type=int, default=0,
                        help="RL groups per step (0: every train task, so the curve tracks the policy, not the task mix)")
    parser.add_argument("--out", default="runs/learning-bench")
    parser.add_argument("--json", dest="json_path", help="write the results here")
    args = parser.parse_args(argv)
    if min(args.tasks_limit, args.heldout_limit, args.samples, args.rl_steps, args.sft_steps) < 1:
        parser.error("--tasks-limit, --heldout-limit, --samples, --sft-steps and --rl-steps must be >= 1")
    result = run(args)
    print_table(result)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
