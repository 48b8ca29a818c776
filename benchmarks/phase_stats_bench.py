"""The per-step cost of the planning/execution phase statistics (issue 16), on real models.

Every update the trainer logs entropy and mean logprob separately on planning and execution
tokens. That costs two things, both paid every step:

  mask   `analysis.phases.batch_phase_mask`: each sampled reply decoded in short windows (two
         batched tokenizer decodes per reply) and its action spans found (CPU, before the update)
  sums   `analysis.phases.phase_sums` in every micro-step of `train.update.update_step`: masked
         reductions of entropy and logprob per phase, and six host syncs (.item())

The trainer has no switch for them: `update_step` computes the sums when the batch carries a
phase mask, and `Trainer.train_step` always sets one. So this benchmark runs the trainer's step
5 itself on one fixed batch of agent-like episodes (reasoning, then a ```bash block, then an
observation, for --turns turns), both ways:

  off    update_step on the batch without a phase mask
  on     batch_phase_mask, then update_step with the mask (what Trainer.train_step does)

The model and optimizer are restored before every timed update, so each does the same work
(and the loss must come out the same both ways: the statistics never touch the loss). Runs
alternate off/on (ABBA) --repeats times after a warm-up; medians are reported, and the two
parts are also timed in isolation (the noisier whole-step difference only bounds them):

  update_off_s, update_on_s   update_step without / with the mask
  mask_s                      batch_phase_mask alone
  sums_s                      phase_sums alone on this step's micro-batch shapes, summed
  overhead_isolated           (mask_s + sums_s) / update_off_s
  overhead_whole_step         (mask_s + update_on_s) / update_off_s - 1
  overhead_isolated_min       overhead_isolated from the fastest run of each part
  update_off_spread           slowest / fastest update_off: how noisy the machine was

Models (--models): `tiny`, the tests' random-weight tiny Llama with SmolLM2's tokenizer (the
cheapest update to divide by), and `smollm2-135m` from the local model cache (skipped with a
note when it cannot be loaded). The mask is CPU work whatever the device, so `mask_s` carries
over to a GPU run as it is, where the update it is compared with is far shorter.

    python benchmarks/phase_stats_bench.py [--models tiny,smollm2-135m] [--repeats 5] [--json PATH]
"""
from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys
import time
from typing import Any, Callable

import torch

WORDS = ("the", "test", "fails", "because", "parser", "returns", "none", "when", "input", "is", "empty", "so", "I",
         "will", "check", "function", "in", "module", "and", "then", "fix", "edge", "case", "first", "look", "at")
COMMANDS = ("cat src/datekit/parse.py", "grep -rn 'def parse' src", "python -m pytest -q tests/test_parse.py",
            "sed -n 1,40p src/semvertools/version.py", "ls -la src")


def tokens(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def reply_ids(tokenizer: Any, rng: random.Random, target: int) -> list[int]:
    """One agent reply of about `target` tokens: reasoning words, then one ```bash action,
    then the end-of-turn token the model samples."""
    action = f"\n```bash\n{rng.choice(COMMANDS)}\n```"
    words: list[str] = []
    while len(tokens(tokenizer, " ".join(words) + action)) < target:
        words += [rng.choice(WORDS) for _ in range(4)]
    return tokens(tokenizer, " ".join(words) + action) + [tokenizer.eos_token_id]


def make_trajectories(tokenizer: Any, args: argparse.Namespace) -> list[list[Any]]:
    """Groups of G agent-like episodes: a prompt, then per turn a sampled reply (mask 1) and an
    observation (mask 0). Rewards alternate within a group so every row has an advantage."""
    from agent_rl.rollout.trajectory import Trajectory

    rng = random.Random(args.seed)
    groups = []
    for task in range(args.rows // args.group_size):
        prompt = tokens(tokenizer, " ".join(rng.choice(WORDS) for _ in range(args.prompt_tokens)))[: args.prompt_tokens]
        group = []
        for member in range(args.group_size):
            response: list[int] = []
            mask: list[int] = []
            for _ in range(args.turns):
                reply = reply_ids(tokenizer, rng, args.reply_tokens)
                observation = tokens(tokenizer, "exit code 0\n" + " ".join(rng.choice(WORDS) for _ in range(
                    args.observation_tokens)))[: args.observation_tokens]
                response += reply + observation
                mask += [1] * len(reply) + [0] * len(observation)
            group.append(Trajectory(task_id=f"task-{task}", prompt_ids=prompt, response_ids=response, loss_mask=mask,
                                    behaviour_logprobs=[-rng.uniform(0.1, 3.0) if m else 0.0 for m in mask],
                                    reward=float(member % 2), num_turns=args.turns, group_index=member))
        groups.append(group)
    return groups


def load(name: str, device: str) -> tuple[Any, Any]:
    """The model and tokenizer `name` stands for (float32, eval mode)."""
    from agent_rl.engines.models import load_model, load_tokenizer, tiny_random_model

    if name == "tiny":
        tokenizer = load_tokenizer("smollm2-135m")
        model = tiny_random_model({"vocab_size": len(tokenizer)}, model_type="llama", seed=0)
    else:
        model, tokenizer = load_model(name, device=device)
    return model.float().to(device), tokenizer


def time_once(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    value = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, value


def sums_in_isolation(batch: Any, settings: Any, phase_mask: torch.Tensor, device: str) -> float:
    """One step's phase_sums calls alone: one per micro-batch, on tensors of its shape."""
    from agent_rl.analysis.phases import phase_sums

    total = 0.0
    generator = torch.Generator().manual_seed(0)
    for group in settings.micro_batches(list(range(len(batch))), batch):
        rows = batch.rows(torch.tensor(group))
        width = rows.input_ids.shape[1]
        entropy = torch.rand(rows.score_mask.shape, generator=generator).to(device)
        logprobs = -torch.rand(rows.score_mask.shape, generator=generator).to(device)
        mask = rows.score_mask.to(device)
        phases = phase_mask[torch.tensor(group), :width].to(device)
        elapsed, _ = time_once(lambda: phase_sums(entropy, logprobs, mask, phases), device)
        total += elapsed
    return total


def bench_model(name: str, args: argparse.Namespace, device: str) -> dict[str, Any]:
    from agent_rl.algo.batch import ShapingSettings, build_train_batch
    from agent_rl.analysis.phases import EXECUTION, PLANNING, ReplySplitter, batch_phase_mask
    from agent_rl.train.config import AlgorithmConfig
    from agent_rl.train.update import UpdateSettings, update_step

    torch.manual_seed(args.seed)
    model, tokenizer = load(name, device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    batch = build_train_batch(make_trajectories(tokenizer, args), ShapingSettings(), pad_id)
    algorithm = AlgorithmConfig(mini_batch_size=args.rows, micro_batch_size=args.micro_batch_size, kl_beta=0.0)
    settings = UpdateSettings(algorithm=algorithm, temperature=1.0, grad_clip=1.0, device=device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    splitter = ReplySplitter.for_tokenizer(tokenizer, "fenced")
    width = batch.input_ids.shape[1]

    def make_mask() -> torch.Tensor:
        return batch_phase_mask(batch.trajectories, width, splitter)

    def timed_update(phase_mask: torch.Tensor | None) -> tuple[float, dict[str, Any]]:
        model.load_state_dict(saved_model)  # the same work every time (restoring is not timed)
        optimizer.load_state_dict(saved_optimizer)
        batch.phase_mask = phase_mask
        return time_once(lambda: update_step(model, optimizer, batch, settings, seed=args.seed), device)

    phase_mask = make_mask()
    _, off_out = timed_update(None)  # warm-up, untimed
    _, on_out = timed_update(phase_mask)
    off_s: list[float] = []
    on_s: list[float] = []
    mask_s: list[float] = []
    for i in range(args.repeats):
        for on in ((False, True) if i % 2 == 0 else (True, False)):  # ABBA: drift hits both alike
            if on:
                masked, phase_mask = time_once(make_mask, "cpu")
                elapsed, on_out = timed_update(phase_mask)
                mask_s.append(masked)
                on_s.append(elapsed)
            else:
                elapsed, off_out = timed_update(None)
                off_s.append(elapsed)
    sums_s = [sums_in_isolation(batch, settings, phase_mask, device) for _ in range(max(args.repeats, 5))]

    scored = batch.score_mask.bool()
    planning = int(((phase_mask == PLANNING) & scored).sum())
    execution = int(((phase_mask == EXECUTION) & scored).sum())
    off_med, on_med = statistics.median(off_s), statistics.median(on_s)
    mask_med, sums_med = statistics.median(mask_s), statistics.median(sums_s)
    micro_steps = len(settings.micro_batches(list(range(len(batch))), batch))
    return {
        "model": name, "device": device, "parameters": sum(p.numel() for p in model.parameters()),
        "rows": len(batch), "width": width, "micro_steps": micro_steps,
        "trained_tokens": int(scored.sum()), "planning_tokens": planning, "execution_tokens": execution,
        "update_off_s": off_med, "update_on_s": on_med, "mask_s": mask_med, "sums_s": sums_med,
        "mask_over_update": mask_med / off_med, "sums_over_update": sums_med / off_med,
        "overhead_isolated": (mask_med + sums_med) / off_med,
        "overhead_whole_step": (mask_med + on_med) / off_med - 1.0,
        # A shared machine only ever adds time: the fastest run of each part is the least disturbed.
        "overhead_isolated_min": (min(mask_s) + min(sums_s)) / min(off_s),
        "update_off_spread": max(off_s) / min(off_s),
        "mask_ms_per_1k_trained_tokens": 1000.0 * mask_med / max(int(scored.sum()), 1) * 1000.0,
        "loss_off": off_out["loss"], "loss_on": on_out["loss"], "loss_equal": off_out["loss"] == on_out["loss"],
        "planning_entropy": on_out.get("planning_entropy"), "execution_entropy": on_out.get("execution_entropy"),
        "times_s": {"update_off": off_s, "update_on": on_s, "mask": mask_s, "sums": sums_s},
    }


def print_table(results: list[dict[str, Any]]) -> None:
    print(f"{'model':<14}{'device':>7}{'tokens':>8}{'update off s':>14}{'update on s':>13}{'mask s':>9}{'sums s':>10}"
          f"{'mask/upd':>10}{'sums/upd':>10}{'isolated':>10}{'whole':>9}")
    for r in results:
        print(f"{r['model']:<14}{r['device']:>7}{r['trained_tokens']:>8}{r['update_off_s']:>14.3f}"
              f"{r['update_on_s']:>13.3f}{r['mask_s']:>9.4f}{r['sums_s']:>10.5f}{r['mask_over_update']:>10.2%}"
              f"{r['sums_over_update']:>10.3%}{r['overhead_isolated']:>10.2%}{r['overhead_whole_step']:>9.2%}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny,smollm2-135m", help="comma-separated: tiny, or a model alias/path")
    parser.add_argument("--rows", type=int, default=8, help="trajectories per update (tasks_per_step × group_size)")
    parser.add_argument("--group-size", type=int, default=2)
    parser.add_argument("--micro-batch-size", type=int, default=2)
    parser.add_argument("--prompt-tokens", type=int, default=192)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--reply-tokens", type=int, default=64, help="about this many sampled tokens per reply")
    parser.add_argument("--observation-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5, help="timed off/on pairs per model (after a warm-up)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_path", help="write the results here")
    args = parser.parse_args(argv)
    if args.rows % args.group_size or args.rows % args.micro_batch_size:
        parser.error("--rows must be a multiple of --group-size and --micro-batch-size")

    from agent_rl.engines.models import ModelNotFoundError

    results, skipped = [], {}
    for name in args.models.split(","):
        try:
            results.append(bench_model(name, args, args.device))
        except ModelNotFoundError as exc:  # smollm2-135m not in this machine's cache
            skipped[name] = str(exc)
            print(f"skipped {name}: {exc}")
    print(f"Phase statistics per update step ({args.rows} rows, {args.turns} turns of ~{args.reply_tokens} sampled "
          f"tokens, micro-batch {args.micro_batch_size}, torch threads {torch.get_num_threads()}; "
          f"medians of {args.repeats})")
    print_table(results)
    for r in results:
        print(f"{r['model']}: phase stats cost {r['overhead_isolated']:.2%} of the update step in isolation "
              f"(mask {r['mask_over_update']:.2%}, sums {r['sums_over_update']:.3%}; fastest runs "
              f"{r['overhead_isolated_min']:.2%}); whole-step difference {r['overhead_whole_step']:+.2%} with update "
              f"times spread {r['update_off_spread']:.2f}x; loss identical with and without: {r['loss_equal']}")
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump({"settings": {k: v for k, v in vars(args).items() if k != "json_path"},
                       "torch_threads": torch.get_num_threads(), "results": results, "skipped": skipped}, fh, indent=2)
    return 0 if all(r["loss_equal"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
