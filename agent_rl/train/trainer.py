"""The DAPO training loop, top to bottom.

One step (`Trainer.train_step`):

  1. sample tasks                 TaskSampler (seeded epochs) or AdaptiveTaskPool (by running
                                  pass rate, shown each graded group); resumable
  2. roll out G per task          agent_rl.rollout.runner.collect through the engine
  3. grade, shape, filter         dynamic sampling drops zero-variance groups, draws more
  4. advantages                   per group, on shaped rewards (algo/batch.py)
  5. update                       train/update.py `update_step`: old logprobs once, then
                                  ppo_epochs × mini-batches of micro-batches, DAPO loss
  6. weight sync                  push weights into the engine and verify on a probe
  7. log and checkpoint

Formulas live in agent_rl.algo and the update in update.py; this file only orchestrates.

Asynchronous mode (`algorithm.mode: async`): steps 1-2 run continuously in a producer thread
(train/async_rollouts.py) with its own copy of the weights in the engine; step 2 becomes
"take the next finished groups, at most η versions old" (an adaptive pool is shown each group
as it is taken), step 6 pushes weights while episodes keep running, and the loss (update.py)
is the decoupled objective it always is.

N ranks (`torchrun --nproc-per-node N -m agent_rl.cli train ...`): rank 0 does steps 1-4, 6
and 7 as above, with an engine that holds its own copy of the weights; every rank holds an
FSDP2 shard of the policy and joins step 5 on rank 0's batch, the gathers of step 6 and the
sharded checkpoint of step 7. With one process every rank call below is a no-op.
The engine must have what training needs (capabilities.TRAINING), checked at start-up. The
trainer owns one event loop for its calls into the engine (weight sync, close).
"""
from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Coroutine, Sequence, TypeVar

import torch
import yaml

from agent_rl.algo.advantages import dynamic_sample
from agent_rl.algo.batch import ShapingSettings, build_train_batch
from agent_rl.analysis.phases import ReplySplitter, batch_phase_mask
from agent_rl.engines.capabilities import TRAINING, Closes, has, require
from agent_rl.rollout.trajectory import Trajectory, write_jsonl
from agent_rl.train.checkpoint import CheckpointContents, CheckpointManager, LoadedCheckpoint
from agent_rl.train.checkpoint import optimizer_fingerprint, restore_training_state
from agent_rl.train.config import TrainConfig
from agent_rl.train.distributed.fsdp import ShardSettings, copy_weights, full_state_dict, load_sharded, save_sharded
from agent_rl.train.distributed.fsdp import shard, unwrap
from agent_rl.train.distributed.ranks import Ranks
from agent_rl.train.metrics import MetricsLogger, devices_held, mean, process_cpu_seconds, step_metrics
from agent_rl.train.policy import find_resume_checkpoint, load_policy, make_optimizer, run_to_max_steps, seed_everything
from agent_rl.train.task_pool import LearnsFromOutcomes, episode_outcomes, make_task_sampler, pool_metrics
from agent_rl.train.update import UpdateSettings, update_step
from agent_rl.train.weight_sync import probe_ids, sync_weights, trainer_probe_logprobs

log = logging.getLogger(__name__)

StepCallback = Callable[[int, dict[str, Any]], None]
T = TypeVar("T")


def reward_plateaued(rewards: Sequence[float], window: int, min_delta: float) -> bool:
    """True when the mean reward of the last `window` steps beat the window before by < min_delta."""
    if len(rewards) < 2 * window:
        return False
    recent = sum(rewards[-window:]) / window
    before = sum(rewards[-2 * window : -window]) / window
    return recent - before < min_delta


def group_by_task(trajectories: Sequence[Trajectory], task_ids: Sequence[str]) -> list[list[Trajectory]]:
    """One group per drawn task, in draw order, members by group index (broken ones included:
    the partial-group policy decides about them)."""
    by_task: dict[str, list[Trajectory]] = defaultdict(list)
    for traj in trajectories:
        by_task[traj.task_id].append(traj)
    return [sorted(by_task[t], key=lambda x: x.group_index) for t in dict.fromkeys(task_ids) if by_task[t]]


class FollowerMetrics:
    """Ranks other than 0 log nothing: rank 0 owns metrics.jsonl and the curves."""

    history: list[dict[str, Any]] = []

    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        return {}

    def event(self, step: int, kind: str, **fields: Any) -> None:
        pass

    def close(self) -> None:
        pass


class Trainer:
    """DAPO training of one policy against SWE tasks, built from a validated `TrainConfig`.

    Construction loads the model (or resumes it: `resume=True` takes the latest checkpoint
    under `config.checkpoint_dir`, a path takes that one), the optimizer, the frozen reference
    (when a KL term or reference resets are configured), the tasks and the engine, and rejects
    an engine that lacks what training needs (`EngineCapabilityError`). `train()` runs to
    `config.max_steps` and closes everything; `train_step()` runs one step. `on_step(step, row)`
    is called with each step's metrics row. Use as a context manager, or call `close()`.

    Outputs under `config.output_dir`: metrics.jsonl, events.jsonl, rollouts/step-N.jsonl,
    checkpoints/, engine_weights/ (checkpoint-reload engines), training_curves.png.
    """

    def __init__(self, config: TrainConfig, *, resume: bool | str = False, on_step: StepCallback | None = None) -> None:
        self.config = config
        self.resume = resume
        self.on_step = on_step
        self.step = 0
        self.policy_version = 0
        self.reference_is_initial = True
        self.last_reset_step = 0
        self._closed = False
        # The engine's async calls (weight sync, close) run here; never inside a running loop.
        self._loop = asyncio.new_event_loop()
        self._engine_server: Any = None  # cluster.kind ray with an hf engine: the workers' endpoint
        self._replicas: Any = None  # cluster.engine_replicas: the Ray actors serving the policy
        self.runner: Any = None  # the EpisodeRunner: made at the first rollout, reused every step, closed in close()
        self.rollouts: Any = None  # async mode: the producer (AsyncRollouts), started at the first step
        self._async_resume: dict[str, Any] = {}  # async mode: the draws a checkpoint had started, not trained
        self._partial_groups_dropped = 0  # this step's groups dropped for lost members (step deadline)
        self.engine: Any = None  # rank 0 only
        self.ranks = Ranks.from_env(config.model.device, config.distributed.timeout_s)
        try:
            self._setup()
        except BaseException:
            try:
                if self.engine is not None and has(self.engine, Closes):
                    self._run(self.engine.close())
            finally:
                self._loop.close()
                self.ranks.close()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one of the engine's coroutines to completion on the trainer's own event loop."""
        return self._loop.run_until_complete(coro)

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg = self.config
        self.output_dir = Path(cfg.output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        seed_everything(cfg.seed)
        self.agent_config = cfg.agent
        self.temperature = float(self.agent_config.sampling.temperature)

        self.checkpoints = CheckpointManager(cfg.checkpoint_dir, cfg.checkpoint.keep_last)
        loaded = find_resume_checkpoint(self.checkpoints, self.resume)
        if self.ranks.distributed and cfg.lora.enabled:
            raise ValueError("lora.enabled with several training ranks is not supported yet: "
                             "train LoRA in one process, or shard full fine-tuning over ranks")
        if self.is_async and (self.ranks.distributed or cfg.cluster.kind != "local"):
            raise ValueError("algorithm.mode async runs in one trainer process with local rollouts for now; "
                             "use mode sync with several ranks or cluster.kind ray")
        policy = load_policy(cfg.model, cfg.lora, loaded)
        self.model, self.tokenizer = policy.model, policy.tokenizer
        self.device, self.dtype, self.pad_id = policy.device, policy.dtype, policy.pad_id
        self.reference = self._make_reference(loaded)
        if self.ranks.is_main:
            # Sharded weights cannot serve generation, so N ranks give the engine its own copy;
            # so does async mode: episodes keep sampling while the trainer's weights change.
            own_copy = self.ranks.distributed or self.is_async
            self.engine = self._make_engine(copy.deepcopy(self.model) if own_copy else self.model)
        shard_settings = ShardSettings(cfg.distributed.mixed_precision, cfg.distributed.cpu_offload,
                                       cfg.distributed.reshard_after_forward)
        self.model = shard(self.model, self.ranks, shard_settings, self.device)
        if self.reference is not None:
            self.reference = shard(self.reference, self.ranks, shard_settings, self.device)
        self.optimizer, self.scheduler = make_optimizer(self.model, cfg.optim, cfg.max_steps)
        # Only rank 0 rolls out; the others never materialize task repositories.
        self.tasks = self._load_tasks() if self.ranks.is_main else {}
        self.sampler = make_task_sampler(cfg.tasks, sorted(self.tasks), seed=cfg.seed,
                                         difficulty={i: t.difficulty for i, t in self.tasks.items()}) if self.tasks else None
        history: list[dict[str, Any]] = []
        fingerprint = None
        if loaded is not None:
            history = self._restore(loaded)
            fingerprint = self._optimizer_fingerprint()
            if cfg.cluster.engine_replicas:
                self._sync()  # the replicas started from the base model: serve the resumed weights
        if not self.ranks.is_main:
            self.metrics: Any = FollowerMetrics()
            return
        self.metrics = MetricsLogger(
            self.output_dir,
            tensorboard=cfg.logging.tensorboard,
            wandb=cfg.logging.wandb,
            wandb_project=cfg.logging.wandb_project,
            run_config=cfg.to_dict(),
            history=history,
        )
        if loaded is not None:
            # Once per resume, not per step: lets a test check the restored optimizer state.
            self.metrics.event(self.step, "resumed", checkpoint=str(loaded.path),
                               optimizer_fingerprint=fingerprint,
                               saved_optimizer_fingerprint=loaded.state.get("optimizer_fingerprint"))
        (self.output_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False), encoding="utf-8")

    def _make_reference(self, loaded: LoadedCheckpoint | None) -> torch.nn.Module | None:
        """A frozen copy of the policy for the KL term; None when no KL is used or logged."""
        alg = self.config.algorithm
        if alg.kl_beta == 0 and not alg.reference_reset.every and not alg.reference_reset.on_plateau:
            return None
        if loaded is None:
            reference = copy.deepcopy(self.model)
        elif not loaded.state.get("reference_is_initial", True):
            reference = copy.deepcopy(self.model)
            reference.load_state_dict(loaded.reference_state())
        elif self.config.lora.enabled:
            # The reference is still the initial policy, which checkpoints do not duplicate. A
            # fresh LoRA adapter is the identity (B = 0), so zeroing B restores the initial policy.
            reference = copy.deepcopy(self.model)
            for name, param in reference.named_parameters():
                if "lora_B" in name:
                    param.data.zero_()
        else:
            from agent_rl.engines.models import load_model

            reference, _ = load_model(self.config.model.name, device=self.device, dtype=self.dtype)
        reference.eval()
        reference.requires_grad_(False)
        return reference

    def _load_tasks(self) -> dict[str, Any]:
        from envs import load_tasks

        tasks = list(load_tasks(self.config.tasks.source))
        if self.config.tasks.ids:
            wanted = set(self.config.tasks.ids)
            missing = wanted - {t.instance_id for t in tasks}
            if missing:
                raise ValueError(f"tasks.ids not found in {self.config.tasks.source}: {', '.join(sorted(missing))}")
            tasks = [t for t in tasks if t.instance_id in wanted]
        from envs.task_images import require_prebuilt_images

        require_prebuilt_images(tasks)  # a missing dataset image fails the run now, not at its first draw
        return {t.instance_id: t for t in tasks}

    def _make_engine(self, model: Any) -> Any:
        from agent_rl.engines.factory import make_engine

        cfg = self.config
        if cfg.cluster.engine_replicas:
            # Replicas on the Ray cluster serve the policy; the trainer holds a pool over them
            # and pushes every update to each (a checkpoint folder they all load).
            if cfg.engine.kind != "hf":
                raise ValueError(f"cluster.engine_replicas runs engine.kind hf in each replica, not {cfg.engine.kind!r} "
                                 "(for vLLM replicas, run `vllm serve` yourself and point engine.kind openai at it)")
            from agent_rl.rollout.ray_engines import RayEngineReplicas

            self._replicas = RayEngineReplicas(cfg.cluster, cfg.engine, model=cfg.model.name, tokenizer=self.tokenizer)
            engine = self._replicas.pool
        else:
            # For kind "hf" the engine samples from `model`: in one process, the very model object
            # being trained.
            engine = make_engine(cfg.engine, model=model, tokenizer=self.tokenizer)
        try:
            require(engine, TRAINING, "train")
        except Exception:
            if has(engine, Closes):
                self._run(engine.close())
            raise
        return engine

    def _restore(self, loaded: LoadedCheckpoint) -> list[dict[str, Any]]:
        if self.ranks.distributed:
            if loaded.sharded_dir is None:
                raise ValueError(f"{loaded.path} was written by one process (no sharded/ state): resume it "
                                 "in one process, or start the N-rank run from its model/ with model.name")
            load_sharded(loaded.sharded_dir, self.model, self.optimizer)
        elif loaded.sharded_dir is not None and "optimizer" not in loaded.state:
            raise ValueError(f"{loaded.path} holds sharded optimizer state from an N-rank run: resume it with "
                             "torchrun (any rank count), or start a one-process run from its model/")
        history = restore_training_state(loaded, self.optimizer, self.scheduler, self.sampler)
        state = loaded.state
        self.step = loaded.step
        self.policy_version = int(state.get("policy_version", loaded.step))
        self.reference_is_initial = bool(state.get("reference_is_initial", True))
        self.last_reset_step = int(state.get("last_reset_step", 0))
        self._async_resume = dict(state.get("async") or {})
        return history

    @property
    def is_async(self) -> bool:
        return self.config.algorithm.mode == "async"

    @property
    def is_main(self) -> bool:
        """Rank 0 (or the only process): the one that logs, plots and owns the checkpoint files."""
        return self.ranks.is_main

    # ------------------------------------------------------------------ the loop
    def train(self) -> list[dict[str, Any]]:
        """Train to `max_steps`, checkpoint and plot at the end, close; returns the metrics history."""
        return run_to_max_steps(self)

    def train_step(self) -> dict[str, Any]:
        """One training step (roll out, filter, update, sync, log, checkpoint); returns its metrics row.

        A step whose groups all have zero reward variance makes no update but still advances
        the scheduler, the policy version and the step counter.
        """
        cfg = self.config
        step = self.step + 1
        started, cpu_started = time.monotonic(), process_cpu_seconds()

        # 1-4. rank 0 rolls out (async: takes finished groups) and builds the batch; every rank receives it.
        rollout = None
        if self.ranks.is_main:
            rollout = self._take_rollouts(step) if self.is_async else self._rollout_step(step)
        rollout = self.ranks.broadcast(rollout)
        batch = rollout["batch"]

        # 5. the update (every rank, on its share of each mini-batch).
        learning_rate = self.scheduler.get_last_lr()[0]
        update: dict[str, Any] = {}
        if len(batch) and batch.score_mask.sum() > 0:
            # Planning vs execution tokens, for the per-phase entropy/logprob metrics only (never the loss).
            batch.phase_mask = batch_phase_mask(batch.trajectories, batch.input_ids.shape[1],
                                                ReplySplitter.for_tokenizer(self.tokenizer, cfg.env.action_format))
            settings = UpdateSettings.from_config(cfg, temperature=self.temperature, device=self.device, ranks=self.ranks)
            update = update_step(self.model, self.optimizer, batch, settings, reference=self.reference,
                                 seed=cfg.seed * 7919 + step)
        elif self.ranks.is_main:
            log.warning("step %d: no informative trajectories (all groups had zero variance); no update", step)
        self.scheduler.step()
        self.policy_version += 1

        # 6. push the new weights into the engine and check it now scores like the trainer.
        sync = self._sync()
        if self.rollouts is not None:
            self.rollouts.weights_pushed()

        self.step = step
        self._maybe_reset_reference(step, sampling_reward=rollout["sampling_reward"])
        if not self.ranks.is_main:
            self._maybe_checkpoint(step)
            return {}

        # 7. log and checkpoint.
        metrics = step_metrics(rollout["trajectories"], rollout["sampling"], batch, update, sync,
                               rollout_s=rollout["rollout_s"], policy_version=self.policy_version)
        metrics["step_time_s"] = time.monotonic() - started
        # Compute axes for `agent-rl analyze` (device hours, CPU hours), besides wall time.
        metrics["cpu_time_s"] = process_cpu_seconds() - cpu_started
        metrics["devices"] = devices_held(self.device, self.ranks.world_size)
        metrics["learning_rate"] = learning_rate
        metrics["task_ids"] = rollout["task_ids"]
        metrics.update(rollout["cluster"])
        metrics.update(rollout.get("async", {}))
        metrics["deadline_episodes"] = sum(t.finish_reason == "deadline" for t in rollout["trajectories"])
        metrics["refilled_episodes"] = sum(t.refill for t in rollout["trajectories"])
        metrics["partial_groups_dropped"], self._partial_groups_dropped = self._partial_groups_dropped, 0
        metrics.update(pool_metrics(self.sampler))  # tasks.sampler adaptive: the pool's make-up after this step
        row = self.metrics.log(step, metrics)
        self._maybe_checkpoint(step)
        if self.on_step is not None:
            self.on_step(step, row)
        return row

    def _maybe_checkpoint(self, step: int) -> None:
        every = self.config.checkpoint.every
        if every and step % every == 0:
            self.save_checkpoint()

    def _rollout_step(self, step: int) -> dict[str, Any]:
        """Steps 1-4 on rank 0: sample tasks, roll out G per task, drop zero-variance groups and
        draw more, then advantages on shaped rewards; returns what the update and the metrics need."""
        cfg, alg = self.config, self.config.algorithm
        drawn_tasks: list[str] = []
        all_trajectories: list[Trajectory] = []

        def rollout_round(n_groups: int) -> list[list[Trajectory]]:
            task_ids = self.sampler.take(n_groups)
            drawn_tasks.extend(task_ids)
            # Episode seeds depend on (seed, step, how many tasks were drawn before): a resumed
            # run replays the same seeds as the uninterrupted one.
            trajectories = self._collect(task_ids, seed=(cfg.seed * 1_000_003 + step) * 1000 + len(drawn_tasks))
            all_trajectories.extend(trajectories)
            self._observe(trajectories, task_ids)
            return self._group(trajectories, task_ids)

        rollout_started = time.monotonic()
        sampling = dynamic_sample(
            rollout_round,
            outcome_of=lambda t: t.reward,
            target_groups=cfg.rollout.tasks_per_step,
            max_rounds=alg.max_generation_rounds,
            enabled=alg.dynamic_sampling,
        )
        rollout_s = time.monotonic() - rollout_started
        self._prefetch_next_rollout()
        write_jsonl(all_trajectories, str(self._rollout_dir() / f"step-{step:06d}.jsonl"))
        cluster: dict[str, Any] = {}
        if hasattr(self.runner, "take_stats"):  # Ray workers: where the episodes ran, what was replayed
            stats = self.runner.take_stats()
            cluster = {"rollout_nodes": len(stats.per_node), "rollout_retried": stats.retried,
                       "rollout_lost_workers": len(stats.lost_workers)}
            if self._replicas is not None:
                cluster.update({"engine_replicas_live": len(self._replicas.live_urls()),
                                "engine_replicas_used": len(stats.per_replica),
                                "rollout_lost_replicas": len(set(stats.lost_replicas))})
        return {
            "cluster": cluster,
            "batch": build_train_batch(sampling.kept, self._shaping(), self.pad_id),
            "trajectories": all_trajectories, "sampling": sampling, "rollout_s": rollout_s, "task_ids": drawn_tasks,
            "sampling_reward": mean([t.reward for t in all_trajectories if t.error is None]),
        }

    def _take_rollouts(self, step: int) -> dict[str, Any]:
        """Async steps 1-4: the next finished groups from the producer (dynamic sampling takes
        more when some have zero variance), then advantages; the same result as _rollout_step."""
        from agent_rl.train.async_rollouts import staleness

        cfg, alg = self.config, self.config.algorithm
        if self.rollouts is None:
            self.rollouts = self._start_producer()
        taken: list[Any] = []

        def take_round(n_groups: int) -> list[list[Trajectory]]:
            finished = self.rollouts.take(n_groups)
            taken.extend(finished)
            groups: list[list[Trajectory]] = []
            for group in finished:  # broken episodes leave the group; an empty group is gone
                groups += self._group(group.trajectories, [group.draw.task_id])
            return groups

        started = time.monotonic()
        sampling = dynamic_sample(take_round, outcome_of=lambda t: t.reward, target_groups=cfg.rollout.tasks_per_step,
                                  max_rounds=alg.max_generation_rounds, enabled=alg.dynamic_sampling)
        all_trajectories = [t for g in taken for t in g.trajectories]
        write_jsonl(all_trajectories, str(self._rollout_dir() / f"step-{step:06d}.jsonl"))
        producer = self.rollouts.take_stats()
        ages = [staleness(self.policy_version, g) for g in taken]
        trained = {id(t) for group in sampling.kept for t in group}
        return {
            "cluster": {},
            "async": {
                "draws": [g.draw.index for g in taken],
                "staleness_max": max(ages, default=0),
                "staleness_hist": {str(a): ages.count(a) for a in sorted(set(ages))},
                "stale_dropped_groups": producer.stale_dropped,
                "stale_dropped_episodes": producer.stale_dropped_episodes,
                "trainer_wait_s": producer.wait_s,
                "multi_version_trajectories": sum(len(t.versions) > 1 for t in all_trajectories if id(t) in trained),
            },
            "batch": build_train_batch(sampling.kept, self._shaping(), self.pad_id),
            "trajectories": all_trajectories, "sampling": sampling, "rollout_s": time.monotonic() - started,
            "task_ids": [g.draw.task_id for g in taken],
            "sampling_reward": mean([t.reward for t in all_trajectories if t.error is None]),
        }

    def _start_producer(self) -> Any:
        from agent_rl.train.async_rollouts import AsyncRollouts, Draw

        cfg = self.config
        if self.runner is None:
            self.runner = self._make_runner()
        if hasattr(self.engine, "weights_updated"):
            # Tokens are tagged with the engine's version: a resumed run's fresh engine must not
            # report 0 for weights that are the checkpoint's (every group would look stale).
            self.engine.weights_updated(self.policy_version)
        resume = self._async_resume
        producer = AsyncRollouts(
            runner=self.runner, engine=self.engine, tokenizer=self.tokenizer, tasks=self.tasks, sampler=self.sampler,
            agent_config=self.agent_config, group_size=cfg.rollout.group_size,
            groups_per_step=cfg.rollout.tasks_per_step, max_staleness=cfg.algorithm.max_staleness,
            concurrency=cfg.rollout.concurrency, seed=cfg.seed, version=lambda: self.policy_version,
            replay=[Draw.from_list(row) for row in resume.get("pending", [])], next_index=int(resume.get("next_index", 0)),
        )
        producer.start()
        return producer

    # ------------------------------------------------------------------ 2. rollout
    def _collect(self, task_ids: list[str], seed: int) -> list[Trajectory]:
        if self.runner is None:
            # One runner for the whole run: its sandbox pools stay warm from one step to the next.
            self.runner = self._make_runner()
        self.model.eval()
        result = self.runner.collect(
            [self.tasks[t] for t in task_ids],
            self.engine,
            self.tokenizer,
            group_size=self.config.rollout.group_size,
            agent_config=self.agent_config,
            policy_version=self.policy_version,
            seed=seed % (2**31 - 1),
            progress=False,
        )
        return list(self._run(result))

    def _make_runner(self) -> Any:
        """Episodes in this process, or (cluster.kind ray) on one worker per Ray node, which
        generate through this process's engine over HTTP."""
        cfg = self.config
        if cfg.cluster.kind == "local":
            from agent_rl.rollout.runner import EpisodeRunner

            return EpisodeRunner(cfg.env, rollout=cfg.rollout)
        from agent_rl.rollout.ray_workers import RayEpisodeRunner, start_engine_server

        if self._replicas is not None:
            return RayEpisodeRunner(cfg.cluster, cfg.env, engine_url="", served_model=cfg.model.name,
                                    tokenizer_spec=cfg.model.name, rollout=cfg.rollout, replicas=self._replicas)
        if cfg.engine.kind == "openai":
            url, served = cfg.engine.base_url or "", cfg.engine.model
        elif cfg.engine.kind == "hf":
            served = cfg.model.name
            self._engine_server, url = self._run(start_engine_server(
                self.engine, model_name=served, base_spec=cfg.model.name, host=cfg.cluster.engine_host))
        else:
            raise ValueError("cluster.kind ray needs engine.kind hf (served by the trainer) or openai (a server "
                             f"the workers can reach), not {cfg.engine.kind!r}")
        return RayEpisodeRunner(cfg.cluster, cfg.env, engine_url=url, served_model=served, tokenizer_spec=cfg.model.name,
                                rollout=cfg.rollout)

    def _prefetch_next_rollout(self) -> None:
        """Start the next step's containers now, so they are warm when its rollout begins."""
        if self.runner is not None and self.step + 1 < self.config.max_steps:
            upcoming = self.sampler.peek(self.config.rollout.tasks_per_step)
            self.runner.prefetch([self.tasks[t] for t in upcoming], self.config.rollout.group_size)

    def _observe(self, trajectories: list[Trajectory], task_ids: list[str]) -> None:
        """An adaptive pool learns each drawn task's pass rate from its graded episodes (broken
        ones say nothing about the task; the partial-group policy does not matter here), at once:
        a dynamic-sampling round later in this step already draws on what this round showed."""
        if isinstance(self.sampler, LearnsFromOutcomes):
            for group in group_by_task(trajectories, task_ids):
                outcomes = episode_outcomes(group)
                if outcomes:
                    self.sampler.observe(group[0].task_id, outcomes)

    def _group(self, trajectories: list[Trajectory], task_ids: list[str]) -> list[list[Trajectory]]:
        """`group_by_task`, then the step deadline's policy for groups that lost members (cut by a
        deadline or broken: those never train); dropped groups are counted for the metrics."""
        from agent_rl.rollout.deadlines import apply_partial_group_policy

        kept, dropped = apply_partial_group_policy(group_by_task(trajectories, task_ids), self.config.rollout.group_size,
                                                   self.config.rollout.partial_group_policy)
        self._partial_groups_dropped += dropped
        return kept

    def _shaping(self) -> ShapingSettings:
        return ShapingSettings.from_algorithm(self.config.algorithm)

    # ------------------------------------------------------------------ 6. sync, reference
    def _sync(self) -> Any:
        """Step 6. Sharded: every rank joins the gather of the full weights and the trainer side
        of the probe; rank 0 pushes to the engine and compares (followers get None)."""
        if not self.ranks.distributed:
            return self._run(sync_weights(self.engine, self.model, self.tokenizer, self.policy_version,
                                          self._sync_context()))
        state = full_state_dict(self.model)
        ws = self.config.weight_sync

        def probe(ids: list[int]) -> list[float]:
            # Rank 0 tells the others which ids the engine was probed on; all score them together.
            ids = self.ranks.broadcast(ids)
            return trainer_probe_logprobs(self.model, ids, self.temperature, self.device)

        if not self.ranks.is_main:
            if ws.verify:
                probe(probe_ids(self.tokenizer, ws.probe_tokens))
            return None
        context = {**self._sync_context(), "state": state, "trainer_logprobs": probe}
        return self._run(sync_weights(self.engine, unwrap(self.model), self.tokenizer, self.policy_version, context))

    def _sync_context(self) -> dict[str, Any]:
        ws = self.config.weight_sync
        return {
            "verify": ws.verify,
            "tolerance": ws.tolerance,
            "probe_tokens": ws.probe_tokens,
            "temperature": self.temperature,
            "export_dir": self.output_dir / "engine_weights",
            "device": self.device,
        }

    def _maybe_reset_reference(self, step: int, sampling_reward: float | None) -> None:
        rr = self.config.algorithm.reference_reset
        if self.reference is None:
            return
        reason = None
        if rr.every and step % rr.every == 0:
            reason = f"schedule (every {rr.every} steps)"
        elif rr.on_plateau and self.ranks.is_main:
            since_reset = [row["reward_mean"] for row in self.metrics.history if row["step"] > self.last_reset_step]
            if sampling_reward is not None:
                since_reset.append(sampling_reward)
            if reward_plateaued(since_reset, rr.plateau_window, rr.plateau_min_delta):
                reason = f"reward plateau over {rr.plateau_window}-step windows"
        reason = self.ranks.broadcast(reason)  # the plateau is judged on rank 0's metrics
        if reason is None:
            return
        copy_weights(self.reference, self.model)
        self.reference_is_initial = False
        self.last_reset_step = step
        if rr.reset_optimizer:
            self.optimizer.state.clear()
        self.metrics.event(step, "reference_reset", reason=reason, optimizer_reset=rr.reset_optimizer)

    # ------------------------------------------------------------------ 7. metrics, checkpoints
    def _rollout_dir(self) -> Path:
        path = self.output_dir / "rollouts"
        path.mkdir(exist_ok=True)
        return path

    def _optimizer_fingerprint(self) -> float:
        """optimizer_fingerprint over every rank's shards (a collective when sharded)."""
        local = torch.tensor([optimizer_fingerprint(self.optimizer)], dtype=torch.float64)
        return float(self.ranks.sum_(local).item())

    def save_checkpoint(self) -> Path | None:
        """Write a checkpoint of the current step (every rank calls it; rank 0 returns the path).

        N ranks: each writes its shards (model and optimizer) with torch distributed checkpoint
        into the directory rank 0 opened; rank 0 adds the gathered HF model/ and the trainer
        state, then renames it into place."""
        cfg = self.config
        keep_optimizer = cfg.checkpoint.save_optimizer
        reset_reference = self.reference is not None and not self.reference_is_initial
        if self.ranks.distributed:
            fingerprint = self._optimizer_fingerprint() if keep_optimizer else None
            state = full_state_dict(self.model)
            reference = full_state_dict(self.reference) if reset_reference else None
            tmp = self.ranks.broadcast(self.checkpoints.begin(self.step) if self.ranks.is_main else None)
            save_sharded(tmp, self.model, self.optimizer if keep_optimizer else None)
            self.ranks.barrier()
            path = (self._finish_checkpoint(tmp, keep_optimizer, state, reference, fingerprint)
                    if self.ranks.is_main else None)
            self.ranks.barrier()
            return path
        reference = self.reference.state_dict() if reset_reference else None
        return self._finish_checkpoint(self.checkpoints.begin(self.step), keep_optimizer, None, reference, None)

    def _finish_checkpoint(self, tmp: Path, keep_optimizer: bool, state: dict[str, Any] | None,
                           reference: dict[str, Any] | None, fingerprint: float | None) -> Path:
        """Rank 0's part of a checkpoint; `state`: the gathered model when sharded, `fingerprint`:
        its optimizer's (sharded runs only)."""
        cfg = self.config
        sharded = state is not None
        # Async: the sampler runs ahead of training; the checkpoint pairs its state with the
        # draws it made that were not trained yet, so a resumed run replays exactly those.
        producer = self.rollouts.snapshot() if self.rollouts is not None else None
        contents = CheckpointContents(
            step=self.step,
            trainer_state={
                "sampler": producer["sampler"] if producer else self.sampler.state_dict(),
                "async": {k: v for k, v in producer.items() if k != "sampler"} if producer else self._async_resume,
                "policy_version": self.policy_version,
                "reference_is_initial": self.reference_is_initial,
                "last_reset_step": self.last_reset_step,
                "metrics_history": list(self.metrics.history),
                "optimizer_sharded": sharded and keep_optimizer,
                # The resumed run logs its restored fingerprint beside this one (sharded: the
                # only cheap proof that every rank's shards came back).
                "optimizer_fingerprint": fingerprint,
            },
            optimizer=self.optimizer if keep_optimizer and not sharded else None,
            scheduler=self.scheduler if keep_optimizer else None,
            reference_state=reference,
            extra_files={"config.yaml": yaml.safe_dump(cfg.to_dict(), sort_keys=False)},
        )
        return self.checkpoints.finish(tmp, unwrap(self.model), self.tokenizer, contents, state_dict=state)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the metrics logger, the engine and the trainer's event loop (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.rollouts is not None:
                self.rollouts.close()
                # Draws started but never trained (a later --resume from the last checkpoint replays
                # those the checkpoint recorded; these are what this process leaves behind).
                self.metrics.event(self.step, "async_untrained_draws",
                                   draws=[d[0] for d in self.rollouts.snapshot()["pending"]])
            self.metrics.close()
            if self.runner is not None:
                self.runner.close()
            if self._engine_server is not None:
                self._run(self._engine_server.cleanup())
            if self.engine is not None and has(self.engine, Closes):
                self._run(self.engine.close())
            if self._replicas is not None:
                self._replicas.close()
        finally:
            self._loop.close()
            self.ranks.close()

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
