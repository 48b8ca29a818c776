"""The adaptive task pool (`tasks.sampler: adaptive`) on scripted pass rates, its exact resume,
its config errors, and the epoch sampler left as it was: no model, no Docker. The last test runs
the real Trainer (a tiny random model, scripted episodes instead of Docker; ~20 s on 2 cores) to
check the wiring: observe, the pool's metrics columns, the checkpoint and the resume."""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from agent_rl.train.config import TasksConfig, load_train_config
from agent_rl.train.sampler import TaskSampler
from agent_rl.train.task_pool import (AdaptivePoolConfig, AdaptiveTaskPool, TaskRecord, make_task_sampler, pool_metrics,
                                      record_outcomes, standing)
from strictconfig import ConfigError

RECIPE = Path(__file__).resolve().parents[2] / "configs" / "smoke-cpu.yaml"
GROUP = 4
# True solve probabilities: three tasks always solved, three never, four in the middle.
TRUE_P = {**{f"always-{i}": 1.0 for i in range(3)}, **{f"never-{i}": 0.0 for i in range(3)},
          **{f"mid-{i}": 0.5 for i in range(4)}}


def _outcomes(task: str, step: int) -> list[bool]:
    """A group's scripted outcomes: a pure function of (task, step), so two runs see the same."""
    rng = random.Random(f"{task}:{step}")
    return [rng.random() < TRUE_P[task] for _ in range(GROUP)]


def _run(pool: AdaptiveTaskPool, steps: range, per_step: int = 2) -> list[list[str]]:
    """Steps of take → observe, as the trainer does; each take is checked against the peek before it."""
    drawn = []
    for step in steps:
        ahead = pool.peek(per_step)
        tasks = pool.take(per_step)
        assert tasks == ahead, "peek must show exactly what the next take draws"
        assert len(set(tasks)) == len(tasks), "one round's tasks are distinct (the trainer groups by task id)"
        for task in tasks:
            pool.observe(task, _outcomes(task, step))
        drawn.append(tasks)
    return drawn


def test_records_and_standing_are_pure_counts():
    cfg = AdaptivePoolConfig(window=4, min_attempts=3, retire_after=5, park_after=6, band_low=0.25, band_high=0.75)
    rec = record_outcomes(TaskRecord(), [True, False, True], window=4)
    assert rec == TaskRecord(attempts=3, solved=2, streak=1, recent=(1, 0, 1))
    assert standing(TaskRecord(), cfg) == "unseen"
    assert standing(record_outcomes(TaskRecord(), [True, False], 4), cfg) == "judging"
    assert standing(rec, cfg) == "in_band"  # 2 of 3
    rec = record_outcomes(rec, [True, True, True, True], window=4)  # window now 1,1,1,1; streak 5
    assert rec.recent == (1, 1, 1, 1) and rec.streak == 5 and standing(rec, cfg) == "retired"
    # Out of the band but heading for retirement / parking: drawn on until the rule decides.
    assert standing(record_outcomes(TaskRecord(), [True] * 4, 4), cfg) == "judging"  # streak 4 < 5
    assert standing(record_outcomes(TaskRecord(), [False] * 5, 4), cfg) == "judging"  # 5 < 6
    assert standing(record_outcomes(TaskRecord(), [False] * 6, 4), cfg) == "parked"
    assert standing(record_outcomes(TaskRecord(), [True] + [False] * 9, 4), cfg) == "out_of_band"  # cannot park
    # One solve unparks for good; one failure ends a retired task's streak.
    assert standing(record_outcomes(TaskRecord(), [False] * 6 + [True], 4), cfg) != "parked"
    assert standing(record_outcomes(rec, [False], 4), cfg) == "in_band"  # 3 of the last 4
    never = AdaptivePoolConfig(retire_after=0, park_after=0, min_attempts=1)
    assert standing(record_outcomes(TaskRecord(), [False] * 100, 16), never) == "out_of_band"


def test_in_band_tasks_dominate_always_solved_retire_never_solved_park_and_come_back_at_the_revisit_rate():
    cfg = AdaptivePoolConfig(revisit_probability=0.1, out_of_band_probability=0.0)  # retire/park after 16 episodes
    pool = AdaptiveTaskPool(sorted(TRUE_P), cfg, seed=0)
    assert pool.make_up() == {"active": 10, "in_band": 0, "retired": 0, "parked": 0, "unseen": 10}
    burn_in = _run(pool, range(40))
    # 16 episodes = 4 groups each: every always/never task has been benched by now.
    assert pool.make_up() == {"active": 4, "in_band": 4, "retired": 3, "parked": 3, "unseen": 0}
    assert all(pool.standing(t) == "retired" for t in TRUE_P if t.startswith("always"))
    assert all(pool.standing(t) == "parked" for t in TRUE_P if t.startswith("never"))
    first_seen = Counter(t for tasks in burn_in for t in tasks)
    assert all(first_seen[t] >= 4 for t in TRUE_P), "every task is tried before being judged"

    later = [t for tasks in _run(pool, range(40, 540)) for t in tasks]
    counts = Counter(later)
    mid = sum(counts[t] for t in TRUE_P if t.startswith("mid"))
    assert mid / len(later) > 0.85, counts
    # A revisit is one draw in ten; each comes back benched again (still always / never solved).
    revisits = (len(later) - mid) / len(later)
    assert revisits == pytest.approx(0.1, abs=0.03), counts
    assert pool.make_up()["retired"] == 3 and pool.make_up()["parked"] == 3
    assert all(counts[t] > 0 for t in TRUE_P), "every benched task was revisited at least once"
    # In-band tasks are drawn evenly (passes visit each once).
    mids = [counts[t] for t in TRUE_P if t.startswith("mid")]
    assert max(mids) - min(mids) <= 0.1 * max(mids)


def test_out_of_band_tasks_join_a_pass_at_their_probability_and_all_benched_still_draws():
    cfg = AdaptivePoolConfig(min_attempts=1, retire_after=0, park_after=0, out_of_band_probability=0.25,
                             revisit_probability=0.0)
    pool = AdaptiveTaskPool(["hard", "mid"], cfg, seed=1)
    pool.observe("hard", [0.0] * 4)  # rate 0 < 0.1: out of band, never parked (park_after 0)
    pool.observe("mid", [1.0, 0.0])
    counts = Counter(t for _ in range(2000) for t in pool.take(1))
    # Each pass holds "mid" and, one pass in four, "hard": hard ≈ 0.25 / 1.25 of the draws.
    assert counts["hard"] / 2000 == pytest.approx(0.2, abs=0.03)

    benched = AdaptiveTaskPool(["a", "b"], AdaptivePoolConfig(retire_after=2, revisit_probability=0.0), seed=0)
    benched.observe("a", [1, 1])
    benched.observe("b", [True, True])  # resolved flags work as rewards
    assert benched.make_up()["retired"] == 2 and sorted(benched.take(2)) == ["a", "b"]


def test_easy_first_orders_passes_by_labels_then_by_observed_pass_rates():
    labels = {"h": "hard", "e": "easy", "m": "medium", "f": "floor", "u1": "", "u2": "weird"}
    cfg = AdaptivePoolConfig(curriculum="easy_first", band_low=0.0, band_high=1.0, retire_after=0, park_after=0,
                             revisit_probability=0.0, min_attempts=2)
    pool = AdaptiveTaskPool(sorted(labels), cfg, seed=0, difficulty=labels)
    first = pool.take(6)
    assert sorted(first[:2]) == ["u1", "u2"], "tasks of unknown difficulty come first"
    assert first[2:] == ["f", "e", "m", "h"]
    # Once judged, the observed pass rate replaces the label.
    pool.observe("h", [1, 1])  # difficulty 0.0: first of the judged
    pool.observe("f", [0, 0])  # difficulty 1.0: last
    pool.observe("u1", [1, 0])  # 0.5, ties with the medium label
    second = pool.take(6)
    assert second[0] == "u2" and second[1] == "h" and second[2] == "e" and second[-1] == "f"
    assert sorted(second[3:5]) == ["m", "u1"]


def test_resume_continues_exactly_rng_included():
    cfg = AdaptivePoolConfig(revisit_probability=0.2, out_of_band_probability=0.3, window=8, min_attempts=2,
                             retire_after=8, park_after=8)
    straight = AdaptiveTaskPool(sorted(TRUE_P), cfg, seed=7)
    _run(straight, range(15), per_step=3)
    saved = json.loads(json.dumps(straight.state_dict()))  # plain data, as a checkpoint holds it
    assert saved["kind"] == "adaptive" and saved["queue"] == straight.queue
    continued = _run(straight, range(15, 60), per_step=3)

    resumed = AdaptiveTaskPool(sorted(TRUE_P), cfg, seed=7)
    resumed.load_state_dict(saved)
    assert _run(resumed, range(15, 60), per_step=3) == continued
    assert resumed.state_dict() == straight.state_dict()
    assert resumed.rng.random() == straight.rng.random()
    # A fresh pool that was not loaded draws differently: the state is what made them agree.
    assert _run(AdaptiveTaskPool(sorted(TRUE_P), cfg, seed=7), range(15, 60), per_step=3) != continued


def test_resume_refuses_another_task_set_seed_or_sampler_kind():
    cfg = AdaptivePoolConfig()
    pool = AdaptiveTaskPool(["a", "b", "c"], cfg, seed=3)
    pool.observe("a", [1.0])
    with pytest.raises(ValueError, match="same tasks and seed"):
        AdaptiveTaskPool(["a", "b", "d"], cfg, seed=3).load_state_dict(pool.state_dict())
    with pytest.raises(ValueError, match="same tasks and seed"):
        AdaptiveTaskPool(["a", "b", "c"], cfg, seed=4).load_state_dict(pool.state_dict())
    with pytest.raises(ValueError, match="same tasks.sampler"):
        AdaptiveTaskPool(["a", "b", "c"], cfg, seed=3).load_state_dict(TaskSampler(["a", "b", "c"], seed=3).state_dict())
    with pytest.raises(ValueError, match="same tasks.sampler"):
        TaskSampler(["a", "b", "c"], seed=3).load_state_dict(pool.state_dict())
    # The pool's own seed wins over the run's.
    assert AdaptiveTaskPool(["a"], AdaptivePoolConfig(seed=11), seed=3).seed == 11


def test_bad_outcomes_and_unknown_tasks_are_errors():
    pool = AdaptiveTaskPool(["a"], AdaptivePoolConfig())
    with pytest.raises(KeyError, match="not in this pool"):
        pool.observe("zzz", [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        pool.observe("a", [float("nan")])
    with pytest.raises(ValueError, match="empty"):
        AdaptiveTaskPool([], AdaptivePoolConfig())


@pytest.mark.parametrize("overrides, message", [
    (["tasks.adaptive.band_low=0.8", "tasks.adaptive.band_high=0.2"], r"band_low \(0.8\) must be <= band_high \(0.2\)"),
    (["tasks.adaptive.band_hi=0.5"], "did you mean 'band_high'"),
    (["tasks.adaptive.revisit_probability=1.5"], "revisit_probability"),
    (["tasks.sampler=bandit"], "not one of"),
])
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(RECIPE, overrides)


def test_adaptive_runs_in_async_mode_too():
    # The async producer draws on the trainer's thread (tests/agent_rl/test_task_pool_async.py).
    config = load_train_config(RECIPE, ["tasks.sampler=adaptive", "algorithm.mode=async"])
    assert config.tasks.sampler == "adaptive" and config.algorithm.mode == "async"


def test_epoch_sampler_is_the_default_and_unchanged():
    config = load_train_config(RECIPE, ["tasks.adaptive.curriculum=easy_first"])  # inert under epoch
    assert config.tasks.sampler == "epoch"
    ids = [f"t{i}" for i in range(7)]
    sampler = make_task_sampler(config.tasks, ids, seed=5)
    assert type(sampler) is TaskSampler
    reference = TaskSampler(ids, seed=5)
    assert [sampler.take(3) for _ in range(5)] == [reference.take(3) for _ in range(5)]
    assert sampler.state_dict() == reference.state_dict() and "kind" not in sampler.state_dict()
    assert pool_metrics(sampler) == {} and pool_metrics(None) == {}
    adaptive = make_task_sampler(TasksConfig(sampler="adaptive", shuffle=False), ids, seed=5, difficulty={"t0": "easy"})
    assert isinstance(adaptive, AdaptiveTaskPool) and adaptive.seed == 5 and adaptive.difficulty["t0"] == "easy"
    assert adaptive.take(7) == ids  # shuffle false: passes in id order
    assert pool_metrics(adaptive) == {"pool_active": 7, "pool_in_band": 0, "pool_retired": 0, "pool_parked": 0,
                                      "pool_unseen": 7}


class ScriptedRunner:
    """Stands in for the EpisodeRunner: each episode's reward is scripted by task (no Docker,
    no generation); records the task ids of every collect."""

    SOLVE = {"datekit-001": [1.0, 1.0], "datekit-002": [0.0, 0.0], "semvertools-001": [1.0, 0.0]}

    def __init__(self) -> None:
        self.collected: list[list[str]] = []

    async def collect(self, tasks, engine, tokenizer, *, group_size, policy_version, **_):
        from agent_rl.rollout.trajectory import Trajectory

        self.collected.append([t.instance_id for t in tasks])
        return [Trajectory(task_id=t.instance_id, prompt_ids=[1, 2, 3], response_ids=[4, 5], loss_mask=[1, 1],
                           behaviour_logprobs=[-1.0, -1.0], reward=self.SOLVE[t.instance_id][g], num_turns=1,
                           policy_version=policy_version, group_index=g)
                for t in tasks for g in range(group_size)]

    def prefetch(self, tasks, group_size) -> None:
        pass

    def close(self) -> None:
        pass


def test_trainer_logs_the_pool_and_resumes_it_from_the_checkpoint(tiny_dir, tmp_path):
    from agent_rl.train.checkpoint import CheckpointManager
    from agent_rl.train.trainer import Trainer

    overrides = [f"model.name={tiny_dir}", f"output_dir={tmp_path}", "max_steps=3", "checkpoint.every=1",
                 "tasks.ids=[datekit-001,datekit-002,semvertools-001]", "tasks.sampler=adaptive",
                 "tasks.adaptive.min_attempts=2", "tasks.adaptive.retire_after=4", "tasks.adaptive.park_after=4",
                 "tasks.adaptive.revisit_probability=0.0", "rollout.tasks_per_step=1", "algorithm.mini_batch_size=2",
                 "algorithm.dynamic_sampling=true", "algorithm.max_generation_rounds=2", "algorithm.kl_beta=0.0",
                 "weight_sync.verify=false", "logging.tensorboard=false", "logging.progress=false"]
    config = load_train_config(RECIPE, overrides)
    with Trainer(config) as trainer:
        trainer.runner = runner = ScriptedRunner()
        rows = [trainer.train_step() for _ in range(2)]
        after_two, collected_by_two = trainer.sampler.state_dict(), sum(map(len, runner.collected))
        rows.append(trainer.train_step())
    assert isinstance(trainer.sampler, AdaptiveTaskPool)
    for row in rows:
        assert {"pool_active", "pool_in_band", "pool_retired", "pool_parked", "pool_unseen"} <= set(row)
        assert row["pool_active"] + row["pool_retired"] + row["pool_parked"] == 3
    # Every graded group was observed (dynamic sampling's extra rounds included): 2 episodes per task drawn.
    assert sum(r["attempts"] for r in after_two["records"].values()) == 2 * collected_by_two
    assert [t for r in rows for t in r["task_ids"]] == [t for c in runner.collected for t in c]

    saved = CheckpointManager(tmp_path / "checkpoints").load(tmp_path / "checkpoints" / "step-000002")
    assert saved.state["sampler"] == after_two
    with Trainer(config, resume=tmp_path / "checkpoints" / "step-000002") as resumed:
        assert resumed.sampler.state_dict() == after_two
        resumed.runner = again = ScriptedRunner()
        row = resumed.train_step()
    assert row["task_ids"] == rows[2]["task_ids"] and again.collected == runner.collected[-len(again.collected):]
    assert {k: v for k, v in row.items() if k.startswith("pool_")} == {k: v for k, v in rows[2].items()
                                                                      if k.startswith("pool_")}
