"""Demonstrations → SFT → DAPO, with an evaluation after every stage: the recipe the SWE-RL
papers share (Nebius: rejection fine-tuning, then DAPO), as one command.

    agent-rl pipeline --config configs/learn-cpu.yaml

Stages, each the same code its own command runs, each writing under `output_dir/<stage>`:

  1. tasks    the train tasks (`train.tasks`: source, ids) written to tasks-train.jsonl, so every
              stage plays exactly the same ones
  2. eval     the base model on them (and on `eval.heldout`, if set)
  3. demos    the scripted expert plays them, or the tasks `demos.tasks` names (`agent-rl
              demos`); only resolved episodes are kept. `demos.exclude_train_tasks` leaves the
              RL tasks out, so SFT has to generalise to them and RL has room to climb
  4. sft      `agent-rl sft` on the demonstrations, from the base model
  5. eval     the SFT checkpoint
  6. rl       `agent-rl train` (DAPO) from the SFT checkpoint on the same tasks
  7. eval     the final policy; then summary.json and a before/after line

A re-run with the same output_dir skips what finished and resumes what did not (demos by their
report, SFT and DAPO from their latest checkpoint when `checkpoint.every` > 0, evals from their
results.jsonl), so a killed pipeline loses at most the step in flight. It reuses a stage only
under the settings it ran with: demos, sft and rl carry a `stage.json` mark (stage_marks.py)
covering their settings and their inputs, and eval rows are stamped with theirs, so a changed
setting runs that stage and everything after it again (a stale stage is moved aside, not lost).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal, Sequence

from pydantic import Field, model_validator

from agent_rl.train.config import TrainConfig
from agent_rl.train.sft_config import SFTConfig
from agent_rl.train.stage_marks import claim_stage
from strictconfig import StrictModel

log = logging.getLogger(__name__)

STAGES = ("base", "sft", "rl")  # the policies evaluated, in order


class DemosStageConfig(StrictModel):
    """`demos:` the expert demonstrations SFT learns from."""

    config_where: ClassVar[str] = "demos"

    style: Literal["thorough", "direct"] = "direct"
    """thorough: view, edit, run the visible tests, submit; direct: edit, submit."""
    concurrency: int = Field(2, ge=1)
    """Episodes in flight."""
    tasks: str | list[str] | None = None
    """Task spec(s) the expert demonstrates (e.g. builtin:floor:train, or a list such as
    [builtin:floor:datekit, builtin:floor:linediff]); None: the train tasks."""
    exclude_train_tasks: bool = False
    """Leave the train (RL) tasks out of the demonstrations: SFT must generalise to them, so RL starts below the ceiling."""
    limit: int | None = Field(None, ge=1)
    """Demonstrate only the first N tasks (after the exclusion)."""


class StageEvalConfig(StrictModel):
    """`eval:` how each stage's policy is evaluated."""

    config_where: ClassVar[str] = "eval"

    samples: int = Field(1, ge=1)
    """Samples per task (n of pass@k)."""
    temperature: float = Field(0.0, ge=0)
    """0: greedy, the policy's single best answer; 1.0 with samples > 1 for pass@k curves."""
    workers: int = Field(4, ge=1)
    """Episodes in flight."""
    heldout: str | None = None
    """Task spec evaluated too but never trained on (e.g. builtin:floor:heldout); None: none."""
    heldout_limit: int | None = Field(None, ge=1)
    """Use only N held-out tasks: the first of each library in turn (`spread_over_libraries`), so
    a small subset still spans the split's libraries."""


class PipelineConfig(StrictModel):
    """`agent-rl pipeline`'s whole configuration: the stages' own config trees, plus where to write.

    `train` is a full `agent-rl train` tree: its model is the base model and its tasks are the
    train tasks. The pipeline fills in what joins the stages (sft.model, sft.data.paths, the
    stages' output directories, the RL run's starting checkpoint), so setting those is an error.
    """

    output_dir: str = "runs/pipeline"
    demos: DemosStageConfig = Field(default_factory=DemosStageConfig)
    sft: SFTConfig = Field(default_factory=SFTConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: StageEvalConfig = Field(default_factory=StageEvalConfig)

    @model_validator(mode="after")
    def _joins_are_the_pipelines(self) -> "PipelineConfig":
        taken = [name for name, section, key in (
            ("sft.model", self.sft, "model"), ("sft.output_dir", self.sft, "output_dir"),
            ("train.output_dir", self.train, "output_dir"),
        ) if key in section.model_fields_set]
        taken += ["sft.data.paths"] if self.sft.data.paths else []
        taken += [f"{s}.checkpoint.dir" for s, c in (("sft", self.sft), ("train", self.train)) if c.checkpoint.dir]
        if taken:
            raise ValueError(f"{', '.join(taken)} are set by the pipeline (from train.model and output_dir); remove them")
        return self

    def stage_dir(self, stage: str) -> Path:
        return Path(self.output_dir) / stage


def write_tasks_jsonl(tasks: list[Any], path: Path) -> str:
    """`tasks` as a task file any `--tasks`/`tasks.source` reads; returns its path."""
    path.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in tasks), encoding="utf-8")
    return str(path)


def write_train_tasks(config: PipelineConfig) -> tuple[str, list[str]]:
    """The train tasks (train.tasks.source filtered by train.tasks.ids) as one JSONL file."""
    from envs.tasks import load_tasks

    tasks = load_tasks(config.train.tasks.source)
    wanted = config.train.tasks.ids
    if wanted:
        by_id = {t.instance_id: t for t in tasks}
        missing = [i for i in wanted if i not in by_id]
        if missing:
            raise ValueError(f"train.tasks.ids not in {config.train.tasks.source!r}: {missing}")
        tasks = [by_id[i] for i in wanted]
    if not tasks:
        raise ValueError(f"no train tasks in {config.train.tasks.source!r}")
    return write_tasks_jsonl(tasks, Path(config.output_dir) / "tasks-train.jsonl"), [t.instance_id for t in tasks]


def library(task: Any) -> str:
    """The library (repository) a task comes from, by the SWE-bench id convention `<library>-<n>`."""
    return task.instance_id.split("-")[0]


def spread_over_libraries(tasks: Sequence[Any], limit: int | None) -> list[Any]:
    """Up to `limit` of `tasks`, taking each library's next task in turn (libraries in sorted
    order, each library's tasks in their given order); None: all of them, as given."""
    if limit is None:
        return list(tasks)
    by_library: dict[str, list[Any]] = {}
    for task in tasks:
        by_library.setdefault(library(task), []).append(task)
    queues = [by_library[name] for name in sorted(by_library)]
    picked: list[Any] = []
    while len(picked) < limit and any(queues):
        for queue in queues:
            if queue and len(picked) < limit:
                picked.append(queue.pop(0))
    return picked


def write_heldout_tasks(config: PipelineConfig) -> str | None:
    from envs.tasks import load_tasks

    if not config.eval.heldout:
        return None
    tasks = spread_over_libraries(load_tasks(config.eval.heldout), config.eval.heldout_limit)
    if not tasks:
        raise ValueError(f"no held-out tasks in {config.eval.heldout!r}")
    return write_tasks_jsonl(tasks, Path(config.output_dir) / "tasks-heldout.jsonl")


def write_demo_tasks(config: PipelineConfig, train_tasks: str, heldout: str | None) -> tuple[str, list[str]]:
    """The tasks the expert demonstrates as one JSONL file: `demos.tasks` (default: the train
    tasks), less the train tasks when `demos.exclude_train_tasks`, first `demos.limit`. A
    held-out task among them is an error: SFT on it would make the held-out numbers meaningless."""
    from envs.tasks import load_tasks

    demos = config.demos
    if demos.tasks is None and not demos.exclude_train_tasks and demos.limit is None:
        return train_tasks, [t.instance_id for t in load_tasks(train_tasks)]
    train_ids = {t.instance_id for t in load_tasks(train_tasks)}
    specs = [demos.tasks] if isinstance(demos.tasks, str) else demos.tasks or [train_tasks]
    tasks = [task for spec in specs for task in load_tasks(spec)]
    if demos.exclude_train_tasks:
        tasks = [t for t in tasks if t.instance_id not in train_ids]
    tasks = tasks[: demos.limit]
    if not tasks:
        raise ValueError(f"no tasks left to demonstrate in {demos.tasks or 'the train tasks'!r}"
                         + (" once the train tasks are excluded" if demos.exclude_train_tasks else ""))
    leaked = sorted({t.instance_id for t in tasks} & {t.instance_id for t in load_tasks(heldout)}) if heldout else []
    if leaked:
        raise ValueError(f"demos.tasks includes held-out tasks {leaked[:5]}{' …' if len(leaked) > 5 else ''}: "
                         "the held-out evaluation must see tasks no stage trained on")
    return write_tasks_jsonl(tasks, Path(config.output_dir) / "tasks-demos.jsonl"), [t.instance_id for t in tasks]


# Settings that never change what a training stage produces: where it writes, how often it
# checkpoints, what it logs. Everything else, including max_steps, is part of its mark.
_NOT_RESULT_KEYS = ("output_dir", "checkpoint", "logging")


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def result_settings(config: Any) -> dict[str, Any]:
    """A stage config's settings that decide its result (see _NOT_RESULT_KEYS)."""
    return {k: v for k, v in config.model_dump(mode="json").items() if k not in _NOT_RESULT_KEYS}


def finished_checkpoint(checkpoint_dir: Path, max_steps: int) -> Path | None:
    """The run's final checkpoint's model directory, if the run reached max_steps."""
    from agent_rl.train.checkpoint import CheckpointManager

    steps = CheckpointManager(checkpoint_dir).step_dirs()
    if steps and steps[-1][0] >= max_steps:
        return steps[-1][1] / "model"
    return None


def evaluate_policy(config: PipelineConfig, model: str, tasks: str, out: Path) -> dict[str, Any]:
    """pass@k of `model` on `tasks` with the RL run's agent and env settings (same turn and
    token budgets), at the eval temperature; resumes from out/results.jsonl."""
    from agent_rl.eval.evaluate import EvalConfig, run_eval

    agent = config.train.agent.model_copy(
        update={"sampling": config.train.agent.sampling.model_copy(update={"temperature": config.eval.temperature})})
    eval_config = EvalConfig(
        model=model, tasks=tasks, out=str(out), samples=config.eval.samples, workers=config.eval.workers,
        seed=config.train.seed, engine=config.train.engine.model_copy(update={"model": model}),
        agent=agent, env=config.train.env,
    )
    return asyncio.run(run_eval(eval_config, progress=False))


def solve_counts(report: dict[str, Any]) -> tuple[int, int]:
    """(resolved samples, samples) of an eval report."""
    return int(report["totals"]["resolved"]), int(report["totals"]["samples"])


class Pipeline:
    """Runs the stages in order; `say` gets one line per milestone (the CLI prints them)."""

    def __init__(self, config: PipelineConfig, say: Callable[[str], None] = print) -> None:
        self.config = config
        self.say = say
        self.out = Path(config.output_dir)
        self.evals: dict[str, dict[str, dict[str, Any]]] = {}
        # stage → digest of the settings it ran under (stage_marks); "tasks": the train tasks file's
        self.marks: dict[str, str] = {}

    def run(self) -> dict[str, Any]:
        from agent_rl.recipes import dump_yaml

        cfg = self.config
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "config.yaml").write_text(dump_yaml(cfg), encoding="utf-8")
        train_tasks, ids = write_train_tasks(cfg)
        self.marks["tasks"] = file_digest(train_tasks)  # in the demos' and RL's marks
        heldout = write_heldout_tasks(cfg)
        self.splits = {"train": train_tasks, **({"heldout": heldout} if heldout else {})}
        self.say(f"[1/7] {len(ids)} train tasks: {', '.join(ids)}" + (f"; held-out: {cfg.eval.heldout}" if heldout else ""))

        demo_tasks, demo_ids = write_demo_tasks(cfg, train_tasks, heldout)
        if demo_tasks != train_tasks:
            self.say(f"[1/7] {len(demo_ids)} demonstration tasks" + (
                " (the train tasks left out)" if cfg.demos.exclude_train_tasks else ""))

        base = cfg.train.model.name
        self._evaluate("base", base, "[2/7]")
        demos = self._demos(demo_tasks)
        sft_model = self._sft(demos)
        self._evaluate("sft", sft_model, "[5/7]")
        rl_model = self._rl(sft_model, train_tasks)
        self._evaluate("rl", rl_model, "[7/7]")
        summary = self._summary()
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        return summary

    # ------------------------------------------------------------------ stages
    def _evaluate(self, stage: str, model: str, tag: str) -> None:
        for split, tasks in self.splits.items():
            out = self.out / f"eval-{stage}-{split}"
            # Eval rows carry their own settings key (model path, sampling, budgets), but a
            # stage re-trained under new settings writes its checkpoint to the same path: the
            # mark ties the directory to the policy's own stage digest as well.
            claim_stage(out, {"policy": self.marks.get(stage, model)}, self.say)
            report = evaluate_policy(self.config, model, tasks, out)
            self.evals.setdefault(stage, {})[split] = report
            solved, n = solve_counts(report)
            self.say(f"{tag} eval {stage:<4} on {split:<7}: solved {solved}/{n} (pass@1 {report['pass_at_k']['1']:.2f})")

    def _demos(self, demo_tasks: str) -> Path:
        from agent_rl.demos.collect import collect_demos
        from agent_rl.engines.models import load_tokenizer
        from envs.tasks import load_tasks

        out = self.config.stage_dir("demos")
        agent = self.config.train.agent
        self.marks["demos"] = claim_stage(out, {
            "tasks": file_digest(demo_tasks), "tokenizer": self.config.train.model.name,
            "demos": self.config.demos.model_dump(mode="json", exclude={"concurrency"}),
            "env": self.config.train.env.model_dump(mode="json"),
            "max_total_tokens": agent.max_total_tokens, "max_tokens_per_turn": agent.max_tokens_per_turn,
        }, self.say)
        report_path = out / "report.json"
        if not report_path.exists():  # the report is written last: its presence means the stage finished
            report = asyncio.run(collect_demos(
                load_tasks(demo_tasks), load_tokenizer(self.config.train.model.name), out,
                concurrency=self.config.demos.concurrency, env_config=self.config.train.env,
                agent_config={"max_total_tokens": agent.max_total_tokens, "max_tokens_per_turn": agent.max_tokens_per_turn},
                style=self.config.demos.style,
            ))
            summary = report.summary()
        else:
            summary = {k: v for k, v in json.loads(report_path.read_text()).items() if k != "rows"}
        self.say(f"[3/7] demos: {summary['kept']} of {summary['tasks']} resolved and kept → {out}/trajectories.jsonl")
        if not summary["kept"]:
            raise RuntimeError(f"no demonstration resolved; see {report_path}")
        return out / "trajectories.jsonl"

    def _sft(self, demos: Path) -> str:
        from agent_rl.train.sft import SFTTrainer

        cfg = self.config
        sft = cfg.sft.model_copy(update={
            "model": cfg.train.model, "output_dir": str(cfg.stage_dir("sft")),
            "data": cfg.sft.data.model_copy(update={"paths": [str(demos)]}),
        })
        self.marks["sft"] = claim_stage(cfg.stage_dir("sft"), {**result_settings(sft), "demos": self.marks["demos"]},
                                        self.say)

        def train() -> None:
            history = SFTTrainer(sft, resume=True).train()
            losses = [row["loss"] for row in history if "loss" in row]
            self.say(f"[4/7] sft: {sft.max_steps} steps, loss {losses[0]:.3f} → {losses[-1]:.3f}" if losses
                     else "[4/7] sft: done")

        return self._train_once("[4/7] sft", sft.checkpoint_dir, sft.max_steps, train)

    def _rl(self, start: str, train_tasks: str) -> str:
        from agent_rl.train.trainer import Trainer

        cfg = self.config
        rl = cfg.train.model_copy(update={
            "model": cfg.train.model.model_copy(update={"name": start}),
            "tasks": cfg.train.tasks.model_copy(update={"source": train_tasks, "ids": None}),
            "output_dir": str(cfg.stage_dir("rl")),
        })
        self.marks["rl"] = claim_stage(cfg.stage_dir("rl"), {
            **result_settings(rl), "tasks": self.marks["tasks"], "sft": self.marks["sft"]}, self.say)

        def on_step(step: int, row: dict[str, Any]) -> None:
            self.say(f"[6/7] rl step {step}/{rl.max_steps}: reward {row.get('reward_mean', float('nan')):.2f} "
                     f"solve {row.get('solve_rate', float('nan')):.0%} ({row.get('step_time_s', 0):.0f}s)")

        return self._train_once("[6/7] rl", rl.checkpoint_dir, rl.max_steps,
                                lambda: Trainer(rl, resume=True, on_step=on_step).train())

    def _train_once(self, tag: str, checkpoint_dir: Path, max_steps: int, train: Callable[[], Any]) -> str:
        """Run `train` (which resumes from its latest checkpoint) unless its final checkpoint
        exists already; the final checkpoint's model directory."""
        done = finished_checkpoint(checkpoint_dir, max_steps)
        if done is not None:
            self.say(f"{tag}: finished earlier ({done.parent})")
            return str(done)
        train()
        done = finished_checkpoint(checkpoint_dir, max_steps)
        if done is None:
            raise RuntimeError(f"{tag.split()[-1]} finished without a checkpoint under {checkpoint_dir}")
        return str(done)

    # ------------------------------------------------------------------ summary
    def _summary(self) -> dict[str, Any]:
        from agent_rl.eval.reward_curve import episode_rewards, reward_curve, step_rewards

        rl_dir = self.config.stage_dir("rl")
        rewards = step_rewards(rl_dir / "metrics.jsonl")
        episodes = episode_rewards(rl_dir / "rollouts")
        curve = reward_curve(rewards, episodes=episodes if len(episodes) == len(rewards) else None)
        table = {stage: {split: dict(zip(("solved", "samples"), solve_counts(r)), pass_at_k=r["pass_at_k"])
                         for split, r in splits.items()}
                 for stage, splits in self.evals.items()}
        return {"stages": table, "rl_reward_curve": curve,
                "rl_curves_png": str(self.config.stage_dir("rl") / "training_curves.png"),
                "sft_curves_png": str(self.config.stage_dir("sft") / "training_curves.png")}


def before_after_lines(summary: dict[str, Any]) -> list[str]:
    """The closing lines: the RL reward curve and each split's solve rate, base → SFT → SFT+RL."""
    curve = summary["rl_reward_curve"]
    lines = ["RL reward per step: " + " ".join(f"{r:.2f}" for r in curve["rewards"])]
    if "diff" in curve:
        lines.append(f"RL reward, last {curve['window']} steps vs first {curve['window']}: "
                     f"{curve['first_mean']:.2f} → {curve['last_mean']:.2f} ({curve['diff']:+.2f}, "
                     f"95% bootstrap over {curve.get('unit', 'step')}s {curve['ci_low']:+.2f} .. {curve['ci_high']:+.2f})")
    for split in summary["stages"]["base"]:
        cells = []
        for stage, label in zip(STAGES, ("base", "SFT", "SFT+RL")):
            row = summary["stages"][stage][split]
            cells.append(f"{label} {row['solved']}/{row['samples']} ({row['solved'] / row['samples']:.0%})")
        lines.append(f"solve rate on {split} tasks, before → after: " + " → ".join(cells))
    return lines
