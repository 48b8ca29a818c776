"""One DAPO update (loss + backward) in agent-rl beside TRL's GRPOTrainer with loss_type="dapo".

Both sides get the same model (SmolLM2-135M-Instruct), the same fixed batch of trajectories
(prompt + right-padded completion, per-token mask), the same advantages and the same "old"
logprobs (the current ones, perturbed so that both clip bounds are hit). What is compared:

  agent-rl  agent_rl.algo.logprobs.token_scores (chunked, masked positions only, with entropy)
            + agent_rl.algo.loss.dapo_loss (token-mean over the batch), then backward
  TRL       GRPOTrainer._compute_loss (its own logprob/entropy pass + the "dapo" loss,
            normalized by num_items_in_batch), then backward

The losses must agree numerically and so must the gradients; the table reports the median
time of each side and the ratio. KL (beta 0) and IS correction are off on both sides, since
TRL only applies its IS correction with vLLM.

    python benchmarks/trainer_bench.py [--batch 8] [--prompt-len 64] [--completion-len 192] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import torch


def make_batch(vocab: int, batch: int, prompt_len: int, completion_len: int, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, vocab, (batch, prompt_len), generator=gen)
    completion = torch.randint(0, vocab, (batch, completion_len), generator=gen)
    lengths = torch.randint(completion_len // 4, completion_len + 1, (batch,), generator=gen)
    mask = (torch.arange(completion_len)[None, :] < lengths[:, None]).long()
    advantages = torch.randn(batch, generator=gen)
    return {"prompt_ids": prompt, "completion_ids": completion, "completion_mask": mask, "advantages": advantages}


@torch.no_grad()
def old_logprobs(model: Any, data: dict[str, torch.Tensor], seed: int) -> torch.Tensor:
    """Current logprobs of the completion tokens, perturbed so that some ratios leave [0.8, 1.28]."""
    from agent_rl.algo.logprobs import token_scores

    ids, attn, score, p = ours_layout(data)
    lp = token_scores(model, ids, attn, score).logprobs[:, p:]
    noise = torch.randn(lp.shape, generator=torch.Generator().manual_seed(seed)) * 0.3
    return (lp + noise) * data["completion_mask"]


def ours_layout(data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    p = data["prompt_ids"].shape[1]
    ids = torch.cat([data["prompt_ids"], data["completion_ids"]], dim=1)
    attn = torch.cat([torch.ones_like(data["prompt_ids"]), data["completion_mask"]], dim=1)
    score = torch.cat([torch.zeros_like(data["prompt_ids"]), data["completion_mask"]], dim=1).float()
    return ids, attn, score, p


def ours_loss(model: Any, data: dict[str, torch.Tensor], old: torch.Tensor, chunk: int) -> torch.Tensor:
    from agent_rl.algo.logprobs import token_scores
    from agent_rl.algo.loss import LossNormalizer, dapo_loss

    ids, attn, score, p = ours_layout(data)
    scores = token_scores(model, ids, attn, score, chunk_size=chunk, with_entropy=True)
    old_full = torch.zeros_like(score)
    old_full[:, p:] = old
    out = dapo_loss(scores.logprobs, old_full, data["advantages"], score, LossNormalizer.for_batch(score),
                    aggregation="token-mean", eps_low=0.2, eps_high=0.28, entropy=scores.entropy)
    return out.loss


def make_trl_trainer(model: Any, tokenizer: Any, batch: int, completion_len: int, out_dir: str) -> Any:
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=out_dir, loss_type="dapo", beta=0.0, epsilon=0.2, epsilon_high=0.28, temperature=1.0,
        num_generations=batch, per_device_train_batch_size=batch, max_completion_length=completion_len,
        report_to="none", use_cpu=not torch.cuda.is_available(), bf16=False, logging_steps=1,
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["unused"] * batch}),
        processing_class=tokenizer,
    )
    # Set by transformers' training loop; one accumulation step here, as on our side.
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def trl_loss(trainer: Any, model: Any, data: dict[str, torch.Tensor], old: torch.Tensor) -> torch.Tensor:
    inputs = {
        "prompt_ids": data["prompt_ids"],
        "prompt_mask": torch.ones_like(data["prompt_ids"]),
        "completion_ids": data["completion_ids"],
        "completion_mask": data["completion_mask"],
        "advantages": data["advantages"],
        "old_per_token_logps": old,
        "num_items_in_batch": data["completion_mask"].sum(),
    }
    return trainer._compute_loss(model, inputs)


def timed(fn: Callable[[], torch.Tensor], model: Any, repeats: int) -> tuple[list[float], float, torch.Tensor]:
    times, loss, grad = [], 0.0, None
    for _ in range(repeats + 1):  # the first run warms up and is not timed
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        value = fn()
        value.backward()
        times.append(time.perf_counter() - start)
        loss = float(value.detach())
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return times[1:], loss, grad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=64)
    parser.add_argument("--completion-len", type=int, default=192)
    parser.add_argument("--chunk", type=int, default=1024, help="agent-rl logprob chunk size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", dest="json_path", help="write the results here")
    args = parser.parse_args(argv)

    from agent_rl.engines.models import load_model

    torch.manual_seed(args.seed)
    model, tokenizer = load_model(args.model, device="cuda" if torch.cuda.is_available() else "cpu")
    model.float()
    data = make_batch(model.get_output_embeddings().weight.shape[0], args.batch, args.prompt_len,
                      args.completion_len, args.seed)
    device = next(model.parameters()).device
    data = {k: v.to(device) for k, v in data.items()}
    old = old_logprobs(model, data, args.seed).to(device)
    with tempfile.TemporaryDirectory() as out_dir:
        trainer = make_trl_trainer(model, tokenizer, args.batch, args.completion_len, out_dir)
        model.train()
        ours_t, ours_l, ours_g = timed(lambda: ours_loss(model, data, old, args.chunk), model, args.repeats)
        trl_t, trl_l, trl_g = timed(lambda: trl_loss(trainer, model, data, old), model, args.repeats)
    grad_diff = float((ours_g - trl_g).abs().max())
    grad_scale = float(trl_g.abs().max())
    loss_diff = abs(ours_l - trl_l)
    agree = loss_diff <= 1e-4 * max(1.0, abs(trl_l)) and grad_diff <= 1e-3 * max(grad_scale, 1e-12)
    ours_med, trl_med = statistics.median(ours_t), statistics.median(trl_t)
    tokens = int(data["completion_mask"].sum())
    result = {
        "model": args.model, "device": str(device), "batch": args.batch, "prompt_len": args.prompt_len,
        "completion_len": args.completion_len, "trained_tokens": tokens, "repeats": args.repeats,
        "agent_rl": {"loss": ours_l, "median_s": ours_med, "times_s": ours_t},
        "trl_grpo_dapo": {"loss": trl_l, "median_s": trl_med, "times_s": trl_t},
        "ratio_agent_rl_over_trl": ours_med / trl_med,
        "loss_abs_diff": loss_diff, "grad_max_abs_diff": grad_diff, "grad_max_abs": grad_scale, "agree": agree,
    }
    print(f"DAPO loss + backward: {args.model} on {device}, batch {args.batch}, "
          f"prompt {args.prompt_len} + completion ≤ {args.completion_len} ({tokens} trained tokens)")
    print(f"{'implementation':<28}{'loss':>14}{'median s':>12}{'tokens/s':>12}")
    for name, loss, med in (("agent-rl (dapo_loss)", ours_l, ours_med), ("TRL GRPOTrainer dapo", trl_l, trl_med)):
        print(f"{name:<28}{loss:>14.8f}{med:>12.3f}{tokens / med:>12.1f}")
    print(f"ratio agent-rl / TRL time: {result['ratio_agent_rl_over_trl']:.2f}")
    print(f"|Δ loss| = {loss_diff:.2e}, max |Δ grad| = {grad_diff:.2e} (max |grad| {grad_scale:.2e}): "
          f"{'AGREE' if agree else 'DISAGREE'}")
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
