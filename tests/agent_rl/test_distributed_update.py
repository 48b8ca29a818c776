"""Two FSDP2 ranks (torchrun, gloo on CPU) take the same update step as one process.

tests/agent_rl/dist_update_probe.py runs `update_step` on a fixed 9-row batch with a tiny
random Llama and SGD at lr 1 (so each parameter's change is minus its gradient), once as a
plain process and once as `torchrun --nproc-per-node 2`. The losses, metrics and every
parameter's change must agree to float32 rounding. The configurations cover the one-pass
update, several epochs of small mini-batches (the separate old-logprob pass, and padding
passes where 9 rows split 5/4 across ranks), the token-budget micro-batches and the KL term
against a sharded reference.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

PROBE = Path(__file__).with_name("dist_update_probe.py")
REPO = Path(__file__).resolve().parents[2]

CASES = {
    "one-pass": [],
    "epochs-and-padding": ["algorithm.ppo_epochs=2", "algorithm.mini_batch_size=3", "algorithm.micro_batch_size=1"],
    "token-budget": ["algorithm.micro_batch_tokens=40"],
    "kl-to-sharded-reference": ["algorithm.kl_beta=0.1"],
}


def _run(out: Path, overrides: list[str], ranks: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable] if ranks == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]
    done = subprocess.run([*launcher, str(PROBE), str(out), *overrides], env=env, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_match_one_process(case, tmp_path):
    one = _run(tmp_path / "one.pt", CASES[case], 1)
    two = _run(tmp_path / "two.pt", CASES[case], 2)
    m1, m2 = one["metrics"], two["metrics"]
    assert m1["optimizer_steps"] == m2["optimizer_steps"] and m1["trained_tokens"] == m2["trained_tokens"]
    for key in ("loss", "grad_norm", "entropy", "approx_kl_old", "kl_ref"):
        if m1[key] is None:
            assert m2[key] is None
        else:
            assert m2[key] == pytest.approx(m1[key], rel=1e-5, abs=1e-6), key
    if case == "kl-to-sharded-reference":
        assert m1["kl_ref"] > 0
    assert m1["grad_norm"] > 0
    assert one["delta"].keys() == two["delta"].keys()
    for name, delta in one["delta"].items():
        torch.testing.assert_close(two["delta"][name], delta, rtol=1e-4, atol=1e-6, msg=name)
