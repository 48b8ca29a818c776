"""`agent-rl analyze` and its pure parts (issue 16): update sparsity and rank, the planning /
execution split of replies, the compute-curve fit, pass@k crossings, and the command end to
end on a fabricated run directory. No Docker; the tiny models run on CPU in seconds."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from agent_rl.analysis import phases
from agent_rl.analysis.compute_curve import cumulative_compute, fit_sigmoid, sigmoid_curve
from agent_rl.analysis.passk_curves import crossing_k
from agent_rl.analysis.sparsity import changed_mask, layer_index, layer_type, param_change, sparsity_summary, update_rank
from agent_rl.analysis.two_phase import planning_rise_onset

# ---------------------------------------------------------------------- sparsity


def test_sparsity_counts_exactly_the_changed_parameters():
    gen = torch.Generator().manual_seed(0)
    before = {
        "model.layers.0.self_attn.q_proj.weight": torch.randn(8, 8, generator=gen),
        "model.layers.0.mlp.up_proj.weight": torch.randn(16, 8, generator=gen),
        "model.layers.1.self_attn.q_proj.weight": torch.randn(8, 8, generator=gen),
        "model.norm.weight": torch.ones(8),
    }
    after = {k: v.clone() for k, v in before.items()}
    after["model.layers.0.self_attn.q_proj.weight"].view(-1)[:10] += 1e-3  # 10 of 64
    after["model.layers.0.mlp.up_proj.weight"].view(-1)[::4] -= 0.5  # 32 of 128
    changes = [param_change(k, before[k], after[k], torch.float32) for k in before]
    summary = sparsity_summary(changes)
    total = 64 + 128 + 64 + 8
    assert summary["overall"] == {"params": total, "changed": 42, "fraction": 42 / total}
    assert summary["by_type"]["attn_q"]["changed"] == 10 and summary["by_type"]["attn_q"]["params"] == 128
    assert summary["by_type"]["mlp"]["fraction"] == 0.25
    assert summary["by_type"]["norm"]["changed"] == 0
    assert summary["by_layer"]["0"]["changed"] == 42 and summary["by_layer"]["1"]["changed"] == 0


def test_tolerance_ignores_a_cast_but_counts_one_bfloat16_step():
    w = torch.randn(1000, generator=torch.Generator().manual_seed(1))
    as_bf16 = w.to(torch.bfloat16)
    # float32 base vs its bfloat16 copy: rounding alone, nothing changed.
    assert changed_mask(w, as_bf16.float(), torch.bfloat16).sum() == 0
    # The smallest stored bfloat16 update of every value is a change.
    bumped = torch.nextafter(as_bf16, torch.full_like(as_bf16, float("inf")))
    assert changed_mask(as_bf16, bumped, torch.bfloat16).all()
    # A float32 update far below a bfloat16 step vanishes when compared as bfloat16.
    assert changed_mask(w, w + 1e-7 * w.abs().clamp(min=1e-3), torch.bfloat16).sum() == 0
    assert changed_mask(w, w + 1e-7 * w.abs().clamp(min=1e-3), torch.float32).sum() > 900


def test_layer_types_and_indices_by_name():
    assert layer_type("model.layers.3.self_attn.k_proj.weight") == "attn_k"
    assert layer_type("model.layers.3.self_attn.o_proj.weight") == "attn_o"
    assert layer_type("model.layers.3.mlp.down_proj.weight") == "mlp"
    assert layer_type("model.layers.3.post_attention_layernorm.weight") == "norm"
    assert layer_type("model.embed_tokens.weight") == "embeddings"
    assert layer_type("lm_head.weight") == "lm_head"
    assert layer_index("model.layers.12.mlp.up_proj.weight") == 12
    assert layer_index("model.norm.weight") is None


def test_effective_rank_of_a_known_low_rank_update():
    gen = torch.Generator().manual_seed(2)
    u, _ = torch.linalg.qr(torch.randn(64, 3, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(48, 3, generator=gen, dtype=torch.float64))
    equal = update_rank((u * 0.01) @ v.T)
    assert equal.numerical_rank == 3 and equal.full_rank == 48
    assert equal.effective_rank == pytest.approx(3.0, abs=1e-6)
    sigma = torch.tensor([3.0, 2.0, 1.0], dtype=torch.float64)
    p = sigma / sigma.sum()
    expected = float(torch.exp(-(p * p.log()).sum()))
    uneven = update_rank((u * sigma) @ v.T)
    assert uneven.numerical_rank == 3 and uneven.effective_rank == pytest.approx(expected, rel=1e-6)
    assert update_rank(torch.zeros(5, 4)).effective_rank == 0.0
    full = update_rank(torch.randn(32, 32, generator=gen))
    assert full.numerical_rank == 32 and full.effective_rank > 20


# ---------------------------------------------------------------------- phases

FENCED_REPLY = (
    "The bug is in `parse`; let me look at it first.\n"
    "```python\nthis is an example, not an action\n```\n"
    "```view src/pkg/core.py\n10-40\n```\n"
)
JSON_REPLY = (
    "<think>I should run the tests.</think>\n"
    'Running them now. <tool_call>{"name": "bash", "arguments": {"command": "pytest -q"}}</tool_call>'
)


def _span_texts(text, fmt):
    return [text[s:e] for s, e in phases.execution_spans(text, fmt)]


def test_fenced_reply_split_matches_what_the_env_parses():
    from envs.actions import View, parse_action

    (action_text,) = _span_texts(FENCED_REPLY, "fenced")
    assert action_text == "```view src/pkg/core.py\n10-40\n```"
    assert parse_action(action_text, "fenced") == parse_action(FENCED_REPLY, "fenced") == View("src/pkg/core.py", (10, 40))
    assert _span_texts("Done.\n```submit\n```", "fenced") == ["```submit\n```"]
    assert _span_texts("All fixed. <submit/>", "fenced") == ["<submit/>"]
    assert _span_texts("thinking\n```bash\nls -la", "fenced") == ["```bash\nls -la"]  # unclosed: to the end
    assert _span_texts("no action here, only thoughts", "fenced") == []


def test_json_reply_split_in_both_json_shapes():
    from envs.actions import Bash, parse_action

    (call,) = _span_texts(JSON_REPLY, "json")
    assert call == '<tool_call>{"name": "bash", "arguments": {"command": "pytest -q"}}</tool_call>'
    assert parse_action(call, "json") == Bash("pytest -q")
    bare = '  {"name": "submit", "arguments": {}}\n'
    assert _span_texts(bare, "json") == [bare.strip()]
    assert _span_texts("I think the fix is done.", "json") == []


def test_fenced_action_tags_are_the_envs():
    from envs import actions

    for tag in actions._ACTION_TAGS:  # every block the env acts on is execution, fences included
        block = f"```{tag} a.py\nbody\n```"
        assert _span_texts(f"thinking\n{block}\nmore", "fenced") == [block]
    assert _span_texts("thinking\n```python\nx = 1\n```", "fenced") == []


@pytest.fixture(scope="module")
def tokenizer():
    from agent_rl.engines.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.mark.parametrize("fmt,reply", [("fenced", FENCED_REPLY), ("json", JSON_REPLY)])
def test_token_phases_follow_the_text_split(tokenizer, fmt, reply):
    ids = tokenizer.encode(reply, add_special_tokens=False) + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    splitter = phases.ReplySplitter.for_tokenizer(tokenizer, fmt)
    pieces = phases.token_pieces(ids, splitter.decode)
    assert "".join(pieces) == tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    codes = splitter.reply(ids)
    execution = "".join(p for p, c in zip(pieces, codes) if c == phases.EXECUTION)
    planning = "".join(p for p, c in zip(pieces, codes) if c == phases.PLANNING)
    (action,) = _span_texts(reply, fmt)
    assert action in execution and len(execution) - len(action) <= 2  # a token may straddle the boundary
    assert planning.startswith(reply[:20]) and codes[-1] == phases.NONE  # end of turn: neither


def test_response_phases_and_per_phase_sums(tokenizer):
    reply = tokenizer.encode(FENCED_REPLY, add_special_tokens=False)
    observation = tokenizer.encode("<|im_start|>user\nfile contents<|im_end|>", add_special_tokens=False)
    response = reply + observation + reply
    mask = [1] * len(reply) + [0] * len(observation) + [1] * len(reply)
    splitter = phases.ReplySplitter.for_tokenizer(tokenizer, "fenced")
    codes = splitter.response(response, mask)
    assert codes[len(reply): len(reply) + len(observation)] == [phases.NONE] * len(observation)
    assert codes[: len(reply)] == codes[-len(reply):] == splitter.reply(reply)

    class Traj:
        prompt_ids = [1, 2, 3]
        response_ids = response
        loss_mask = mask

    phase_mask = phases.batch_phase_mask([Traj()], 3 + len(response) + 2, splitter)
    assert phase_mask.shape == (1, 3 + len(response) + 2) and phase_mask[0, :3].eq(0).all()
    score = torch.zeros_like(phase_mask, dtype=torch.float32)
    score[0, 3: 3 + len(response)] = torch.tensor(mask, dtype=torch.float32)
    entropy = torch.where(phase_mask == phases.EXECUTION, 0.5, 2.0)
    logprobs = torch.where(phase_mask == phases.EXECUTION, -0.1, -1.0)
    sums = phases.phase_sums(entropy, logprobs, score, phase_mask)
    n_exec = 2 * sum(c == phases.EXECUTION for c in codes[: len(reply)])
    assert sums["execution_tokens"] == n_exec and sums["execution_entropy"] == pytest.approx(0.5 * n_exec)
    means = phases.phase_means(sums)
    assert means == pytest.approx({"planning_entropy": 2.0, "execution_entropy": 0.5,
                                   "planning_logprob": -1.0, "execution_logprob": -0.1})


def test_unknown_action_format_is_refused(tokenizer):
    with pytest.raises(ValueError, match="unknown action format 'xml'"):
        phases.ReplySplitter.for_tokenizer(tokenizer, "xml")


def test_planning_rise_onset_is_found_where_planning_rises_and_execution_is_flat():
    rng = np.random.default_rng(0)
    steps = np.arange(1, 61)
    execution = np.where(steps < 20, 1.5 - 0.05 * steps, 0.5) + rng.normal(0, 0.01, 60)
    planning = np.where(steps < 30, 1.0, 1.0 + 0.03 * (steps - 30)) + rng.normal(0, 0.01, 60)
    onset = planning_rise_onset(steps, planning, execution, window=6)
    assert onset.step is not None and 24 <= onset.step <= 32
    assert planning_rise_onset(steps, np.ones(60) + rng.normal(0, 0.01, 60), execution, window=6).step is None
    with pytest.raises(ValueError, match="at least 12 steps"):
        planning_rise_onset(steps[:8], planning[:8], execution[:8], window=6)


# ---------------------------------------------------------------------- compute curve


@pytest.mark.parametrize("truth", [(0.72, 0.1, 3e4, 1.3), (0.45, 0.05, 2e6, 0.8)])
def test_sigmoid_fit_recovers_known_parameters_from_noisy_points(truth):
    A, R0, C_mid, B = truth
    rng = np.random.default_rng(3)
    compute = np.geomspace(C_mid / 30, C_mid * 30, 40)
    reward = sigmoid_curve(compute, A, R0, C_mid, B) + rng.normal(0, 0.01, compute.shape)
    fit = fit_sigmoid(compute, reward, bootstrap=100)
    assert fit.A == pytest.approx(A, abs=0.02) and fit.R0 == pytest.approx(R0, abs=0.02)
    assert fit.C_mid == pytest.approx(C_mid, rel=0.15) and fit.B == pytest.approx(B, rel=0.15)
    low, high = fit.intervals["A"]
    assert low <= A <= high and high - low < 0.1
    assert fit.bootstrap_fits >= 95 and fit.rmse < 0.02
    fixed = fit_sigmoid(compute, reward, r0=R0, bootstrap=0)
    assert fixed.R0 == R0 and fixed.A == pytest.approx(A, abs=0.02) and fixed.intervals == {}


def test_sigmoid_fit_refuses_bad_points_with_a_clear_message():
    with pytest.raises(ValueError, match="at least 5 points \\(got 4\\)"):
        fit_sigmoid([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ValueError, match="positive"):
        fit_sigmoid([0, 1, 2, 3, 4], [0.1] * 5)
    with pytest.raises(ValueError, match="strictly increasing"):
        fit_sigmoid([1, 2, 2, 3, 4], [0.1] * 5)


def test_cumulative_compute_merges_steps_without_compute():
    compute, values = cumulative_compute([10, None, 5, 0, 7], [0.1, 0.3, 0.2, 0.4, None])
    assert compute == [10.0, 15.0] and values == pytest.approx([0.2, 0.3])


def test_crossing_k():
    base = {1: 0.1, 2: 0.2, 4: 0.4, 8: 0.7}
    assert crossing_k(base, {1: 0.3, 2: 0.35, 4: 0.4, 8: 0.5}) == 4
    assert crossing_k(base, {1: 0.3, 2: 0.4, 4: 0.5, 8: 0.8}) is None


# ---------------------------------------------------------------------- the command end to end


def _eval_dir(path: Path, counts: dict[str, tuple[int, int]]) -> None:
    path.mkdir(parents=True)
    per_task = {t: {"n": n, "c": c, "errors": 0, "pass@1": c / n} for t, (n, c) in counts.items()}
    (path / "report.json").write_text(json.dumps({"pass_at_k": {"1": 0.0}, "per_task": per_task}))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run in the trainer's layout: config.yaml naming a tiny base model, a last checkpoint
    whose weights differ in known places, metrics.jsonl with the phase keys, two pipeline evals."""
    from agent_rl.engines.models import tiny_random_model

    root = tmp_path_factory.mktemp("run")
    base = tiny_random_model({"vocab_size": 256}, model_type="llama", seed=0)
    base.save_pretrained(str(root / "base"))
    trained = tiny_random_model({"vocab_size": 256}, model_type="llama", seed=0)
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        q = trained.model.layers[0].self_attn.q_proj.weight  # 64 × 64: a rank-2 update everywhere
        q += 1e-2 * torch.randn(64, 2, generator=gen) @ torch.randn(2, 64, generator=gen)
        trained.model.layers[1].mlp.up_proj.weight[:16] += 0.1  # 16 of 128 rows of 128 × 64
    step = root / "checkpoints" / "step-000003"
    trained.save_pretrained(str(step / "model"))
    (step / "COMPLETE").write_text("3")
    (root / "config.yaml").write_text(yaml.safe_dump({"model": {"name": str(root / "base")}}))
    rng = np.random.default_rng(5)
    rows = []
    for s in range(1, 31):
        rows.append({"step": s, "reward_mean": float(sigmoid_curve(s * 1000.0, 0.8, 0.05, 12000.0, 2.0) + rng.normal(0, 0.01)),
                     "trained_tokens": 1000, "planning_entropy": 1.0 + 0.02 * max(0, s - 15) + rng.normal(0, 0.005),
                     "execution_entropy": 0.5 + rng.normal(0, 0.005), "planning_logprob": -1.2, "execution_logprob": -0.3})
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Base solves each task once in 8; trained always solves one task and never the others:
    # trained leads at k=1 (1/3 vs 1/8), base catches up at k=3 (pass@k = k/8 ≥ 1/3).
    _eval_dir(root / "eval-base-train", {"a": (8, 1), "b": (8, 1), "c": (8, 1)})
    _eval_dir(root / "eval-rl-train", {"a": (8, 0), "b": (8, 8), "c": (8, 0)})
    return root


def test_analyze_command_end_to_end(run_dir, tmp_path, capsys):
    from agent_rl.cli import main

    out = tmp_path / "analysis"
    assert main(["analyze", str(run_dir), "--out", str(out), "--bootstrap", "50"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"analysis.json", "analysis.md", "sparsity.png", "update_rank.png", "two_phase.png",
            "compute_curve.png", "pass_at_k.png"} <= names
    analysis = json.loads((out / "analysis.json").read_text())
    update = analysis["update"]
    total = update["overall"]["params"]
    assert update["overall"]["changed"] == 64 * 64 + 16 * 64
    assert update["overall"]["fraction"] == pytest.approx((64 * 64 + 16 * 64) / total)
    assert update["by_type"]["attn_q"]["fraction"] == pytest.approx(0.5)  # two layers, one changed
    assert update["by_layer"]["1"]["changed"] == 16 * 64
    q_rank = update["ranks"]["model.layers.0.self_attn.q_proj.weight"]
    assert q_rank["numerical_rank"] == 2 and q_rank["full_rank"] == 64
    assert update["ranks"]["model.layers.1.mlp.up_proj.weight"]["numerical_rank"] == 1
    assert update["ranks"]["model.layers.1.self_attn.k_proj.weight"]["numerical_rank"] == 0
    onset = analysis["two_phase"]["onset"]["step"]
    assert onset is not None and 10 <= onset <= 18
    fit = analysis["compute_curve"]["fit"]
    assert fit["A"] == pytest.approx(0.8, abs=0.05) and fit["C_mid"] == pytest.approx(12000, rel=0.2)
    (pair,) = analysis["pass_at_k"]["pairs"]
    assert pair["ks"] == list(range(1, 9)) and pair["crossing_k"] == 3
    assert pair["base"]["3"] == pytest.approx(3 / 8) and pair["trained"]["3"] == pytest.approx(1 / 3)
    text = (out / "analysis.md").read_text()
    assert "Update sparsity" in text and "cross at" in text and "A (asymptote)" in text


def test_analyze_reports_sections_it_cannot_compute(run_dir, tmp_path, capsys):
    from agent_rl.cli import main

    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward_mean": 0.1, "trained_tokens": 5}) + "\n")
    assert main(["analyze", str(lonely)]) == 0
    analysis = json.loads((lonely / "analysis" / "analysis.json").read_text())
    assert "model.name" in analysis["update"]["skipped"]
    assert "planning_" in analysis["two_phase"]["skipped"]
    assert "at least 5 points (got 1)" in analysis["compute_curve"]["skipped"]
    assert "--base-eval" in analysis["pass_at_k"]["skipped"]
    assert main(["analyze", str(tmp_path / "missing")]) == 2


def test_compute_axes_device_and_cpu_hours(tmp_path):
    from agent_rl.analysis.analyze import AnalyzeOptions, compute_curve_section
    from agent_rl.analysis.run_dir import RunDir

    rows = [{"step": s, "reward_mean": 0.1 * s, "step_time_s": 360.0, "devices": 8, "cpu_time_s": 720.0} for s in range(1, 7)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = RunDir.open(tmp_path)
    device = compute_curve_section(run, AnalyzeOptions(compute_axis="device_hours", bootstrap=10))
    assert device["axis_label"] == "device hours" and device["compute"] == pytest.approx([0.8 * s for s in range(1, 7)])
    cpu = compute_curve_section(run, AnalyzeOptions(compute_axis="cpu_hours", bootstrap=10))
    assert cpu["compute"] == pytest.approx([0.2 * s for s in range(1, 7)])
    # A run logged before these were recorded says so instead of fitting a curve on zeros.
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps({"step": r["step"], "reward_mean": r["reward_mean"]}) + "\n"
                                                    for r in rows))
    with pytest.raises(ValueError, match="no CPU hours"):
        compute_curve_section(RunDir.open(tmp_path), AnalyzeOptions(compute_axis="cpu_hours"))


def test_process_cpu_seconds_counts_this_process_and_devices_follow_the_device():
    from agent_rl.train.metrics import devices_held, process_cpu_seconds

    before = process_cpu_seconds()
    sum(i * i for i in range(2_000_000))
    assert process_cpu_seconds() > before
    assert devices_held("cuda:0", 4) == 4
    assert devices_held("cpu", 2) == 2 * torch.get_num_threads()


# ---------------------------------------------------------------------- the update's phase metrics


def test_update_logs_phase_means_and_leaves_the_loss_unchanged():
    from agent_rl.algo.batch import ShapingSettings, build_train_batch
    from agent_rl.engines.models import tiny_random_model
    from agent_rl.rollout.trajectory import Trajectory
    from agent_rl.train.config import load_train_config
    from agent_rl.train.update import UpdateSettings, update_step

    config = load_train_config(Path(__file__).resolve().parents[2] / "configs" / "smoke-cpu.yaml", ["algorithm.kl_beta=0"])
    gen = torch.Generator().manual_seed(6)
    group = [Trajectory(task_id="t", prompt_ids=[5, 6, 7], response_ids=torch.randint(10, 200, (8,), generator=gen).tolist(),
                        loss_mask=[1] * 8, behaviour_logprobs=[-2.0] * 8, reward=float(g), group_index=g) for g in range(2)]
    batch = build_train_batch([group], ShapingSettings.from_algorithm(config.algorithm), 0)
    results = []
    for with_phases in (False, True):
        model = tiny_random_model({"vocab_size": 256}, model_type="llama", seed=0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        if with_phases:
            batch.phase_mask = torch.zeros_like(batch.input_ids, dtype=torch.int8)
            batch.phase_mask[:, 3:7] = phases.PLANNING
            batch.phase_mask[:, 7:11] = phases.EXECUTION
        results.append(update_step(model, optimizer, batch, UpdateSettings.from_config(config, temperature=1.0, device="cpu")))
    plain, phased = results
    assert "planning_entropy" not in plain
    assert phased["loss"] == plain["loss"] and phased["grad_norm"] == plain["grad_norm"]
    # Token 3 (the first response token) is scored too: position 0 is the only one never scored.
    assert phased["planning_token_fraction"] == pytest.approx(0.5)
    mean = (phased["planning_entropy"] + phased["execution_entropy"]) / 2
    assert mean == pytest.approx(phased["entropy"], rel=1e-5)
    assert phased["planning_logprob"] < 0 and phased["execution_logprob"] < 0


def test_lora_delta_is_the_merged_update(tmp_path):
    from peft import LoraConfig, get_peft_model

    from agent_rl.analysis.weights import lora_deltas
    from agent_rl.engines.models import tiny_random_model

    model = get_peft_model(tiny_random_model({"vocab_size": 256}, model_type="llama", seed=0),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1, generator=torch.Generator().manual_seed(7))
    model.save_pretrained(str(tmp_path / "adapter"))
    base = {k: v.clone() for k, v in tiny_random_model({"vocab_size": 256}, model_type="llama", seed=0).state_dict().items()}
    merged = model.merge_and_unload().state_dict()
    deltas = lora_deltas(tmp_path / "adapter")
    assert set(deltas) == {f"model.layers.{i}.self_attn.{m}.weight" for i in (0, 1) for m in ("q_proj", "v_proj")}
    for name, delta in deltas.items():
        assert torch.allclose(delta, merged[name] - base[name], atol=1e-6)
        assert update_rank(delta).numerical_rank == 4
