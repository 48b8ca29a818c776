"""Does it learn? base model → SFT on expert demonstrations → DAPO from the SFT checkpoint,
evaluated after each stage on a train split and a held-out split that share no library.

Stages (each an `agent-rl` command run as a subprocess of this one, so the run is one
process tree and every stage is what a user would type):

  1. eval base     agent-rl eval on the train and held-out task subsets (pass@1..k)
  2. demos + sft   agent-rl demos on the train subset, agent-rl sft on what resolved
  3. dapo          agent-rl train from the SFT checkpoint (model.name=<ckpt>/model) on the train subset
  4. eval          after SFT and after SFT+RL, then agent-rl compare base / sft / sft+rl (PNG per split)
  5. RL curve      mean reward of RL's last 3 steps minus its first 3, with a bootstrap interval

The baseline is the base model in the same run. Defaults (the floor tier, 4 tasks per split,
4 samples, 12 SFT steps, 8 RL steps) are sized for about an hour on 2 CPU cores; shrink with
--tasks-limit, --samples, --sft-steps, --rl-steps.

    python benchmarks/learning_bench.py [--tier floor] [--tasks-limit 4] [--samples 4] [--sft-steps 12]
        [--rl-steps 8] [--out runs/learning-bench] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parent.parent
STAGES = ("base", "sft", "sft+rl")
SPLITS = ("train", "heldout")


def pick_tasks(tier: str, split: str, limit: int) -> list[Any]:
    """The first `limit` tasks of `builtin:<tier>:<split>`, round-robin over its libraries (so a
    small subset still spans them), in a fixed order."""
    from envs.tasks import load_tasks

    spec = f"builtin:{tier}:{split}" if tier else f"builtin:{split}"
    by_lib: dict[str, list[Any]] = {}
    for task in sorted(load_tasks(spec), key=lambda t: t.instance_id):
        by_lib.setdefault(task.instance_id.split("-")[0], []).append(task)
    picked: list[Any] = []
    while len(picked) < limit and any(by_lib.values()):
        for lib in sorted(by_lib):
            if by_lib[lib] and len(picked) < limit:
                picked.append(by_lib[lib].pop(0))
    return picked


def write_tasks(tasks: Sequence[Any], path: Path) -> str:
    path.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in tasks), encoding="utf-8")
    return str(path)


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


def bootstrap_diff(first: Sequence[float], last: Sequence[float], *, draws: int = 10000,
                   seed: int = 0) -> dict[str, float]:
    """mean(last) - mean(first) and its 95% percentile bootstrap interval (each side resampled
    with replacement)."""
    rng = random.Random(seed)
    diffs = sorted(
        sum(rng.choices(last, k=len(last))) / len(last) - sum(rng.choices(first, k=len(first))) / len(first)
        for _ in range(draws))
    return {"first_mean": sum(first) / len(first), "last_mean": sum(last) / len(last),
            "diff": sum(last) / len(last) - sum(first) / len(first),
            "ci_low": diffs[int(0.025 * draws)], "ci_high": diffs[int(0.975 * draws) - 1]}


def reward_curve(metrics_path: Path, window: int = 3) -> dict[str, Any]:
    rewards = [float(json.loads(line)["reward_mean"]) for line in metrics_path.read_text().splitlines()
               if line.strip()]
    if len(rewards) < 2 * window:
        return {"rewards": rewards, "note": f"fewer than {2 * window} steps: no first/last comparison"}
    stats = bootstrap_diff(rewards[:window], rewards[-window:])
    stats["rises"] = stats["ci_low"] > 0
    return {"rewards": rewards, **stats}


def eval_args(model: str, tasks: str, out: Path, args: argparse.Namespace) -> list[str]:
    ks = ",".join(str(k) for k in sorted({1, *(k for k in (2, 4, 8) if k <= args.samples), args.samples}))
    return ["eval", "--model", model, "--tasks", tasks, "--samples", str(args.samples), "--k", ks,
            "--out", str(out), "--no-progress", "--max-turns", str(args.max_turns),
            "--max-tokens-per-turn", str(args.max_tokens_per_turn), "--max-total-tokens", str(args.max_total_tokens),
            "--temperature", str(args.temperature), "--workers", "2"]


def latest_checkpoint(run_dir: Path) -> str:
    steps = sorted((run_dir / "checkpoints").glob("step-*"))
    if not steps:
        raise RuntimeError(f"no checkpoint under {run_dir}/checkpoints")
    return str(steps[-1] / "model")


def run(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tasks = {s: pick_tasks(args.tier, s, args.tasks_limit) for s in SPLITS}
    files = {s: write_tasks(tasks[s], out / f"tasks-{s}.jsonl") for s in SPLITS}
    times: dict[str, float] = {}
    models = {"base": args.model}
    evals: dict[str, dict[str, Path]] = {stage: {} for stage in STAGES}

    def evaluate(stage: str) -> None:
        for split in SPLITS:
            evals[stage][split] = out / f"eval-{stage.replace('+', '-')}-{split}"
            times[f"eval {stage} {split}"] = agent_rl(eval_args(models[stage], files[split], evals[stage][split], args),
                                                      out / f"eval-{stage.replace('+', '-')}-{split}.log")

    evaluate("base")
    if not (out / "demos" / "report.json").exists():  # a re-run with the same --out reuses finished stages
        times["demos"] = agent_rl(["demos", "--tasks", files["train"], "--out", str(out / "demos"),
                                   "--model", args.model, "--concurrency", "2"], out / "demos.log")
    if not list((out / "sft" / "checkpoints").glob("step-*")):
        times["sft"] = agent_rl(
            ["sft", "--data", str(out / "demos" / "trajectories.jsonl"), f"model.name={args.model}",
             "model.dtype=float32", f"optim.lr={args.sft_lr:.6e}", f"batch_size={min(args.tasks_limit, 4)}",
             f"max_steps={args.sft_steps}", f"output_dir={out / 'sft'}", "checkpoint.every=0",
             "checkpoint.save_optimizer=false", "logging.tensorboard=false", "logging.progress=false"], out / "sft.log")
    models["sft"] = latest_checkpoint(out / "sft")
    evaluate("sft")
    tasks_per_step = min(2, args.tasks_limit)
    rollout_batch = tasks_per_step * args.group_size  # one optimizer step per rollout batch
    times["rl"] = agent_rl(
        ["train", "--config", str(REPO / "configs" / "smoke-cpu.yaml"), f"model.name={models['sft']}",
         f"tasks.source={files['train']}", f"max_steps={args.rl_steps}", f"output_dir={out / 'rl'}",
         f"rollout.group_size={args.group_size}", f"rollout.tasks_per_step={tasks_per_step}",
         f"algorithm.mini_batch_size={rollout_batch}", f"algorithm.micro_batch_size={2 if rollout_batch % 2 == 0 else 1}",
         f"optim.lr={args.rl_lr:.6e}",  # written 1.000000e-05: YAML reads a bare 1e-5 as a string
         f"agent.max_turns={args.max_turns}", f"env.max_turns={args.max_turns}",
         f"agent.max_tokens_per_turn={args.max_tokens_per_turn}", f"agent.max_total_tokens={args.max_total_tokens}",
         # The reward is the grader's: no length shaping on top of it here.
         "algorithm.overlong_mode=none", "logging.tensorboard=false", "logging.progress=false"], out / "rl.log")
    models["sft+rl"] = latest_checkpoint(out / "rl")
    evaluate("sft+rl")
    for split in SPLITS:
        agent_rl(["compare", *(str(evals[s][split]) for s in STAGES), "--out", str(out / f"compare-{split}")],
                 out / f"compare-{split}.log")

    table = {stage: {split: json.loads((evals[stage][split] / "report.json").read_text())["pass_at_k"]
                     for split in SPLITS} for stage in STAGES}
    return {
        "settings": {k: v for k, v in vars(args).items() if k != "json_path"},
        "tasks": {s: [t.instance_id for t in tasks[s]] for s in SPLITS},
        "demos": {k: v for k, v in json.loads((out / "demos" / "report.json").read_text()).items() if k != "rows"},
        "pass_at_k": table,
        "rl_reward_curve": reward_curve(out / "rl" / "metrics.jsonl"),
        "compare_png": {s: str(out / f"compare-{s}" / "pass_at_k_compare.png") for s in SPLITS},
        "stage_seconds": {k: round(v, 1) for k, v in times.items()},
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
        print(f"last 3 - first 3: {curve['diff']:+.3f} (95% bootstrap {curve['ci_low']:+.3f} .. {curve['ci_high']:+.3f});"
              f" rises: {curve['rises']}")
    print("demos:", result["demos"], " seconds:", result["stage_seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m", help="base model alias or checkpoint")
    parser.add_argument("--tier", default="floor", help="difficulty tier of the splits ('' for all tiers)")
    parser.add_argument("--tasks-limit", type=int, default=4, help="tasks per split")
    parser.add_argument("--samples", type=int, default=4, help="eval samples per task (n of pass@k)")
    parser.add_argument("--temperature", type=float, default=1.0, help="eval sampling temperature")
    parser.add_argument("--max-turns", type=int, default=5)
    parser.add_argument("--max-tokens-per-turn", type=int, default=160, help="expert replies are under 100 tokens")
    parser.add_argument("--max-total-tokens", type=int, default=3072)
    parser.add_argument("--sft-steps", type=int, default=12)
    parser.add_argument("--sft-lr", type=float, default=1e-4)
    parser.add_argument("--rl-steps", type=int, default=8)
    parser.add_argument("--rl-lr", type=float, default=1e-5)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--out", default="runs/learning-bench")
    parser.add_argument("--json", dest="json_path", help="write the results here")
    args = parser.parse_args(argv)
    if args.tasks_limit < 1 or args.samples < 1 or args.rl_steps < 1 or args.sft_steps < 1:
        parser.error("--tasks-limit, --samples, --sft-steps and --rl-steps must be >= 1")
    result = run(args)
    print_table(result)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
