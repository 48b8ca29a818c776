"""One update step on a fixed batch, as 1 process or as N torchrun ranks (FSDP2, gloo on CPU).

Not a test module: test_distributed_update.py runs it both ways and compares what rank 0
writes: the update's metrics and each parameter's change under SGD with lr 1, which is
minus the gradient exactly (no clipping: the clip threshold is huge).

    python tests/agent_rl/dist_update_probe.py OUT.pt [key=value ...]
    torchrun --nproc-per-node 2 tests/agent_rl/dist_update_probe.py OUT.pt [key=value ...]
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from agent_rl.algo.batch import ShapingSettings, build_train_batch
from agent_rl.engines.models import tiny_random_model
from agent_rl.rollout.trajectory import Trajectory
from agent_rl.train.config import load_train_config
from agent_rl.train.distributed.fsdp import ShardSettings, full_state_dict, shard
from agent_rl.train.distributed.ranks import Ranks
from agent_rl.train.update import UpdateSettings, update_step

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "smoke-cpu.yaml"
LENGTHS = ((5, 9, 14), (7, 3, 11), (4, 16, 6))  # three groups of three: 9 rows of uneven length


def batch(config):
    gen = torch.Generator().manual_seed(0)
    groups = []
    for task, lengths in zip("abc", LENGTHS):
        group = []
        for g, n in enumerate(lengths):
            mask = [1] * n
            mask[n // 2] = 0  # an environment token inside the response
            group.append(Trajectory(
                task_id=task, prompt_ids=torch.randint(10, 1000, (6,), generator=gen).tolist(),
                response_ids=torch.randint(10, 1000, (n,), generator=gen).tolist(), loss_mask=mask,
                behaviour_logprobs=[-6.5 * m for m in mask], reward=float(g == (len(task) % 3)), group_index=g))
        groups.append(group)
    return build_train_batch(groups, ShapingSettings.from_algorithm(config.algorithm), 0)


def main(out: str, overrides: list[str]) -> None:
    ranks = Ranks.from_env("cpu")
    config = load_train_config(RECIPE, ["algorithm.kl_beta=0", "algorithm.micro_batch_tokens=null", "rollout.tasks_per_step=3", "rollout.group_size=3",
                                        "algorithm.mini_batch_size=9", "algorithm.micro_batch_size=3",
                                        "optim.grad_clip=1e9", *overrides])
    model = tiny_random_model({"vocab_size": 1000}, model_type="llama", seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model = shard(model, ranks, ShardSettings(), "cpu")
    reference = None
    if config.algorithm.kl_beta > 0:  # a different frozen policy, so the KL term is not zero
        reference = shard(tiny_random_model({"vocab_size": 1000}, model_type="llama", seed=1), ranks, ShardSettings(), "cpu")
        reference.requires_grad_(False)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    settings = UpdateSettings.from_config(config, temperature=1.0, device="cpu", ranks=ranks)
    metrics = update_step(model, optimizer, batch(config), settings, reference=reference, seed=7)
    after = full_state_dict(model)
    if ranks.is_main:
        torch.save({"metrics": metrics, "delta": {k: after[k] - before[k] for k in after}}, out)
    ranks.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
