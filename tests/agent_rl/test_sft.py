"""`agent-rl sft` with the real SmolLM2-135M: the loss, the masks, bucketing, exact resume, the CLI."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from agent_rl.algo.loss import sft_loss
from agent_rl.algo.sft_batch import SFTExample, length_buckets, pad_examples
from agent_rl.cli import main
from agent_rl.rollout.chat_template import TokenConversation, render
from agent_rl.rollout.trajectory import Trajectory
from agent_rl.train.sft import SFTTrainer, sft_step_loss
from agent_rl.train.sft_config import SFTConfig
from agent_rl.train.sft_data import SFTDataError, load_sft_examples, messages_example, trajectory_example

# Qwen2.5-Instruct's template (tool turns folded into a user turn as <tool_response> blocks),
# without the function-calling preamble: a different rendering from SmolLM2's own ChatML.
QWEN25_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if (message.role == 'user') or (message.role == 'system' and not loop.first) or (message.role == 'assistant') %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != 'tool') %}{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}"
    "{%- if loop.last or (messages[loop.index0 + 1].role != 'tool') %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

CHAT = [
    {"role": "user", "content": "Fix the bug in calc.py."},
    {"role": "assistant", "content": "Let me look.\n```bash\ncat calc.py\n```"},
    {"role": "tool", "content": "def add(a, b):\n    return a - b\n"},
    {"role": "assistant", "content": "```bash\nsubmit\n```"},
    {"role": "user", "content": "trailing turn, never learned"},
]


@pytest.fixture(scope="module")
def policy():
    from agent_rl.engines.models import load_model

    return load_model("smollm2-135m", device="cpu", dtype=torch.float32)


@pytest.fixture(params=["smollm2", "qwen2.5"])
def tokenizer(request, policy):
    tok = policy[1]
    if request.param == "qwen2.5":
        tok = copy.deepcopy(tok)
        tok.chat_template = QWEN25_TEMPLATE
    return tok


def test_sft_loss_is_the_masked_token_mean_of_the_negative_logprobs():
    logprobs = torch.tensor([[-9.0, -2.0, -3.0], [-0.5, -4.0, -7.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    assert sft_loss(logprobs, mask, num_tokens=3).item() == pytest.approx((2.0 + 3.0 + 0.5) / 3)
    with pytest.raises(ValueError):
        sft_loss(logprobs, mask, num_tokens=0)


def test_step_loss_equals_a_hand_computed_masked_cross_entropy(policy):
    model, tokenizer = policy
    examples = [SFTExample([5, 17, 230, 41, 99], [0, 0, 1, 1, 0]), SFTExample([8, 311, 62], [1, 1, 1])]
    model.zero_grad(set_to_none=True)
    got = sft_step_loss(model, examples, 0, micro_batch_tokens=100, device="cpu")
    model.zero_grad(set_to_none=True)
    nll, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:  # one row at a time, no padding: plain cross-entropy on the shifted logits
            logits = model(torch.tensor([ex.input_ids])).logits[0].float()
            per_token = torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ex.input_ids[1:]), reduction="none")
            weights = torch.tensor(ex.loss_mask[1:], dtype=torch.float32)  # position 0 is never predicted
            nll += float((per_token * weights).sum())
            count += int(weights.sum())
    assert got["loss_tokens"] == count == 4
    assert got["loss"] == pytest.approx(nll / count, rel=1e-4)


def test_trajectory_rows_never_put_loss_on_environment_tokens(policy, tmp_path):
    tok = policy[1]
    conv = TokenConversation.start(tok, [{"role": "user", "content": "Fix calc.py"}])
    reply = tok.encode("```bash\ncat calc.py\n```", add_special_tokens=False) + [tok.convert_tokens_to_ids("<|im_end|>")]
    conv.add_generation(reply, [-0.1] * len(reply))
    env = conv.add_observation("def add(a, b):\n    return a - b\n")
    last = tok.encode("```bash\nsubmit\n```", add_special_tokens=False)
    conv.add_generation(last, [-0.1] * len(last))
    traj = Trajectory(task_id="t", prompt_ids=conv.prompt_ids, response_ids=conv.response_ids, loss_mask=conv.loss_mask,
                      behaviour_logprobs=conv.logprobs, grade={"resolved": True})
    path = tmp_path / "trajectories.jsonl"
    path.write_text(json.dumps(traj.to_dict()) + "\n" + json.dumps({**traj.to_dict(), "error": "boom"}) + "\n")
    (row,), stats = load_sft_examples([path], tok)
    assert stats.unusable == 1 and row.input_ids == conv.ids
    learned = [i for i, m in zip(row.input_ids, row.loss_mask) if m]
    assert learned == reply + last  # exactly the sampled ids
    for seg in conv.segments:  # the prompt, the observation and the template's closing tokens: mask 0
        if seg.kind != "sampled":
            assert not any(row.loss_mask[seg.start:seg.end])
    assert env and not any(row.loss_mask[len(conv.prompt_ids) + len(reply): len(conv.prompt_ids) + len(reply) + len(env)])


def test_chat_messages_render_through_the_template_with_loss_on_assistant_turns_only(tokenizer):
    row = messages_example(tokenizer, CHAT, "chat.jsonl:1")
    through_last_assistant = CHAT[:4]
    text = render(tokenizer, through_last_assistant, add_generation_prompt=False)
    assert tokenizer.decode(row.input_ids, skip_special_tokens=False) == text
    assert row.input_ids == tokenizer.encode(text, add_special_tokens=False)  # token-exact for canonical text
    spans, current = [], []
    for tok_id, m in zip(row.input_ids, row.loss_mask):
        if m:
            current.append(tok_id)
        elif current:
            spans.append(current)
            current = []
    assert [tokenizer.decode(s, skip_special_tokens=False) for s in spans] == [
        CHAT[1]["content"] + "<|im_end|>", CHAT[3]["content"] + "<|im_end|>"]
    assert "tool_response" not in "".join(tokenizer.decode(s) for s in spans)


def test_malformed_lines_are_errors_naming_file_and_line(policy, tmp_path):
    tok = policy[1]
    good = json.dumps({"messages": CHAT[:2], "reward": 0.0})
    cases = {"{not json": "not valid JSON", '{"foo": 1}': "neither a trajectory",
             '{"messages": [{"role": "user", "content": "hi"}]}': "no assistant turn",
             '{"prompt_ids": [1], "response_ids": [2, 3], "loss_mask": [1], "behaviour_logprobs": [0.0], "task_id": "x"}': "must align"}
    for line, message in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(good + "\n\n" + line + "\n")
        with pytest.raises(SFTDataError, match=rf"bad.jsonl:3: .*{message}"):
            load_sft_examples([path], tok)
    path.write_text(good + "\n" + json.dumps({"messages": CHAT[:2], "resolved": True}) + "\n")
    rows, stats = load_sft_examples([path], tok, only_resolved=True)
    assert len(rows) == 1 and stats.unresolved == 1 and rows[0].source.endswith("bad.jsonl:2")


def test_length_buckets_respect_the_token_budget():
    lengths = [50, 3, 7, 48, 5, 90]
    buckets = length_buckets(lengths, max_tokens=100)
    assert sorted(i for b in buckets for i in b) == list(range(6))
    assert all(len(b) * max(lengths[i] for i in b) <= 100 or len(b) == 1 for b in buckets)
    assert buckets[0] == [1, 4, 2] and [5] in buckets
    batch = pad_examples([SFTExample([1, 2, 3], [1, 1, 1]), SFTExample([4], [1])], pad_id=0)
    assert batch.loss_mask.tolist() == [[0, 1, 1], [0, 0, 0]] and batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_bucketed_micro_batches_give_the_unbucketed_loss_and_gradient(policy):
    model = policy[0]
    gen = torch.Generator().manual_seed(0)
    examples = []
    for n in (4, 21, 6):
        ids = torch.randint(10, 2000, (n,), generator=gen).tolist()
        examples.append(SFTExample(ids, [0, 0] + [1] * (n - 2)))
    param = model.get_output_embeddings().weight
    results = []
    for budget in (21 * 3, 21):  # one padded batch vs several length buckets
        model.zero_grad(set_to_none=True)
        out = sft_step_loss(model, examples, 0, micro_batch_tokens=budget, device="cpu")
        results.append((out, param.grad.clone()))
    (one, grad_one), (many, grad_many) = results
    model.zero_grad(set_to_none=True)
    assert one["micro_batches"] == 1 and many["micro_batches"] > 1
    assert many["padding_fraction"] < one["padding_fraction"]
    assert many["loss"] == pytest.approx(one["loss"], rel=1e-5)
    # Padding changes the float summation order only: equal up to accumulation noise.
    assert float((grad_many - grad_one).norm() / grad_one.norm()) < 1e-4


def _write_chat_data(path: Path) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"Task {i}: fix calc.py"},
                          {"role": "assistant", "content": f"```bash\nsed -i 's/-/+/' calc{i}.py\n```"}],
             "resolved": i != 2} for i in range(5)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _sft_config(tmp_path: Path, data: Path, **extra) -> SFTConfig:
    return SFTConfig.from_config({
        "model": {"device": "cpu", "dtype": "float32"}, "data": {"paths": [str(data)], "max_tokens": 256},
        "optim": {"lr": 1e-4}, "logging": {"tensorboard": False, "progress": False},
        "checkpoint": {"every": 0}, "batch_size": 2, "micro_batch_tokens": 256, **extra})


@pytest.mark.slow  # three model loads and checkpoint writes: ~20 s on a quiet 2-core machine
@pytest.mark.parametrize("lora", [False, True])
def test_resume_is_exact(tmp_path, lora):
    """N steps straight vs N/2, then --resume to N: the same losses and weights."""
    data = _write_chat_data(tmp_path / "chat.jsonl")
    common = {"lora": {"enabled": lora, "r": 4, "alpha": 8}}
    straight = SFTTrainer(_sft_config(tmp_path, data, output_dir=str(tmp_path / "straight"), max_steps=2, **common))
    straight_history = straight.train()
    first = SFTTrainer(_sft_config(tmp_path, data, output_dir=str(tmp_path / "split"), max_steps=1, **common))
    first.train()
    resumed = SFTTrainer(_sft_config(tmp_path, data, output_dir=str(tmp_path / "split"), max_steps=2, **common),
                         resume=True)
    assert resumed.step == 1
    resumed_history = resumed.train()
    assert [r["loss"] for r in resumed_history] == pytest.approx([r["loss"] for r in straight_history], rel=1e-6)
    straight_state, resumed_state = straight.model.state_dict(), resumed.model.state_dict()
    assert straight_state.keys() == resumed_state.keys()
    for key, value in straight_state.items():
        assert torch.allclose(value, resumed_state[key], atol=1e-6), key
    lines = (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]


def test_cli_runs_a_couple_of_steps(tmp_path, capsys):
    data = _write_chat_data(tmp_path / "chat.jsonl")
    out = tmp_path / "run"
    argv = ["sft", "--data", str(data), "--resolved-only", f"output_dir={out}", "max_steps=2", "batch_size=2",
            "model.device=cpu", "data.max_tokens=256", "micro_batch_tokens=256", "logging.progress=true"]
    assert main(argv + ["--print-config"]) == 0
    printed = capsys.readouterr().out
    assert SFTConfig.from_config(__import__("yaml").safe_load(printed)).data.only_resolved
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "4 rows kept of 5 lines (1 unresolved" in text and "step 2/2: loss" in text
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] > 0 and r["grad_norm"] > 0 for r in rows)
    assert (out / "training_curves.png").is_file() and (out / "checkpoints" / "step-000002" / "COMPLETE").is_file()
    assert list((out / "tensorboard").iterdir())
    assert json.loads((out / "data_stats.json").read_text())["unresolved"] == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n')
    assert main(["sft", "--data", str(bad), f"output_dir={tmp_path / 'bad'}", "model.device=cpu"]) == 2
    assert f"{bad}:1: 'messages' must be a non-empty list" in capsys.readouterr().err
