"""What token-exact conversation building costs per episode, against the naive baseline.

Side by side, on the same scripted multi-turn conversations (SmolLM2 tokenizer, its chat
template), in one run:

* delta:     `agent_rl.rollout.chat_template.TokenConversation` — sampled ids appended verbatim,
             template deltas rendered and tokenized per turn, one full re-render check at
             the end (what `run_episode` does).
* baseline:  re-render and re-tokenize the whole conversation with
             `tokenizer.apply_chat_template(..., tokenize=True)` before every turn (the common
             approach; it is *not* token-exact: it re-encodes the model's text).

Also reports how often the baseline's ids differ from what the "model" sampled when the
replies are sampled as non-canonical token sequences (the drift the delta method avoids).

    python benchmarks/conversation_bench.py [--turns 5 10 20 30] [--repeats 5] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from typing import Any

from agent_rl.rollout.chat_template import TokenConversation

REPLY = "I will look at the file.\n```bash\ncat datekit/calendar.py | head -n 40\n```"
OBSERVATION = "exit code 0\n" + "\n".join(f"{i:3d}  def f{i}(x):  return x + {i}" for i in range(40))


def scripted_replies(tokenizer: Any, turns: int, rng: random.Random, noncanonical: bool) -> list[list[int]]:
    """Reply ids per turn; optionally split one word into sub-tokens, as a sampler may."""
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    replies = []
    for turn in range(turns):
        text = f"Turn {turn}: {REPLY}"
        ids = tokenizer.encode(text, add_special_tokens=False)
        if noncanonical:
            word = rng.choice(["look", "file", "head"])
            head, _, tail = text.partition(word)
            ids = (
                tokenizer.encode(head, add_special_tokens=False)
                + [tokenizer.convert_tokens_to_ids(tokenizer.tokenize(c))[0] for c in word]
                + tokenizer.encode(tail, add_special_tokens=False)
            )
        replies.append(ids + [end])
    return replies


def run_delta(tokenizer: Any, replies: list[list[int]]) -> tuple[float, list[int]]:
    started = time.perf_counter()
    conv = TokenConversation.start(
        tokenizer, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": OBSERVATION}]
    )
    for i, ids in enumerate(replies):
        conv.add_generation(ids, [0.0] * len(ids))
        if i + 1 < len(replies):
            conv.add_observation(OBSERVATION)
    conv.verify()
    return time.perf_counter() - started, conv.ids


def run_baseline(tokenizer: Any, replies: list[list[int]]) -> tuple[float, list[int]]:
    started = time.perf_counter()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": OBSERVATION}]
    ids: list[int] = list(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True))
    for i, reply in enumerate(replies):
        messages.append({"role": "assistant", "content": tokenizer.decode(reply[:-1])})
        if i + 1 < len(replies):
            messages.append({"role": "user", "content": OBSERVATION})
        ids = list(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=i + 1 < len(replies)))
    return time.perf_counter() - started, ids


def sampled_ids_preserved(full: list[int], replies: list[list[int]]) -> bool:
    """Every reply's ids appear, in order, as contiguous runs of `full`."""
    at = 0
    for reply in replies:
        found = next((i for i in range(at, len(full) - len(reply) + 1) if full[i: i + len(reply)] == reply), None)
        if found is None:
            return False
        at = found + len(reply)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, nargs="+", default=[5, 10, 20, 30])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None, help="write the results as JSON to this path")
    args = parser.parse_args(argv)

    from agent_rl.engines.models import load_tokenizer

    tokenizer = load_tokenizer("smollm2-135m")
    rng = random.Random(0)
    rows = []
    for turns in args.turns:
        for method, fn in (("delta", run_delta), ("baseline", run_baseline)):
            samples = []
            for _ in range(args.repeats):
                elapsed, _ = fn(tokenizer, scripted_replies(tokenizer, turns, rng, noncanonical=False))
                samples.append(elapsed)
            _, full = fn(tokenizer, replies := scripted_replies(tokenizer, turns, rng, noncanonical=True))
            rows.append(
                {
                    "turns": turns,
                    "method": method,
                    "episode_ms_median": statistics.median(samples) * 1000,
                    "per_turn_ms": statistics.median(samples) * 1000 / turns,
                    "tokens": len(full),
                    "sampled_ids_preserved": sampled_ids_preserved(full, replies),
                }
            )

    header = f"{'turns':>5}  {'method':<9} {'episode ms':>11} {'per turn ms':>12} {'tokens':>7}  sampled ids kept (non-canonical replies)"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['turns']:>5}  {row['method']:<9} {row['episode_ms_median']:>11.2f} {row['per_turn_ms']:>12.3f} "
            f"{row['tokens']:>7}  {row['sampled_ids_preserved']}"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"machine": platform.platform(), "python": platform.python_version(), "rows": rows}, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
