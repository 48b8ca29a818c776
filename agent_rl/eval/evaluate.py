"""pass@k evaluation: n agent samples per task, graded in sandboxes, resumable, reported.

The run is a list of (task, sample index) jobs. Each finished job is appended as one line to
`DIR/results.jsonl` (flushed at once), so an interrupted run keeps everything it finished and
a re-run only does what is missing. A job that raises becomes a line with `error` set: it
counts as an unresolved sample and never stops the others. At the end, report.json,
report.md and pass_at_k.png are (re)written from every line for the requested tasks.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from collections import Counter
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from pydantic import Field, field_validator, model_validator

from agent_rl.engines.factory import EngineConfig
from agent_rl.eval.reports import write_eval_reports
from agent_rl.rollout.agent import AgentConfig
from envs.swe_env import EnvConfig
from strictconfig import StrictModel, settings_digest

log = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"


class EvalConfig(StrictModel):
    """One `agent-rl eval` run: n samples per task, graded, reported as pass@k."""

    model: str
    """Model alias, HF checkpoint dir or served model name; the engine's model unless engine.model is set."""
    tasks: str
    """Task spec: builtin, builtin:easy, tasks.jsonl, ..."""
    out: str
    """Output directory (re-use it to resume)."""
    samples: int = Field(1, ge=1)
    """Samples per task (n)."""
    ks: list[int] | None = None
    """k values of pass@k, each <= samples; None: powers of two up to samples."""
    workers: int = Field(2, ge=1)
    """Episodes in flight at once."""
    seed: int = 0
    """Base seed; each (task, sample) derives its own."""
    retry_errors: bool = False
    """Re-run samples whose previous attempt errored."""
    engine: EngineConfig = Field(default_factory=EngineConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    env: EnvConfig = Field(default_factory=EnvConfig)

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, ks: list[int] | None) -> list[int] | None:
        if ks is not None and any(k < 1 for k in ks):
            raise ValueError(f"k values must be >= 1, got {ks}")
        return ks

    @model_validator(mode="after")
    def _fit_together(self) -> "EvalConfig":
        too_big = [k for k in self.ks or () if k > self.samples]
        if too_big:
            raise ValueError(f"k values {too_big} exceed --samples {self.samples}: pass@k needs k <= n")
        self.engine = self.engine.serving(self.model)
        return self


def sample_seed(base_seed: int, task_id: str, sample: int) -> int:
    """A per-sample seed that does not depend on scheduling order, so a resumed run matches."""
    digest = hashlib.sha256(f"{base_seed}:{task_id}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


class SampleRunner(Protocol):
    """Runs one agent episode on one task and grades it; returns a results row (see `result_row`)."""

    async def run(self, task: Any, sample: int, seed: int) -> dict[str, Any]: ...


def result_row(
    *,
    task: str,
    sample: int,
    seed: int,
    resolved: bool,
    reward: float = 0.0,
    turns: int = 0,
    tokens: int = 0,
    finish_reason: str = "",
    patch: str = "",
    timing: Mapping[str, float] | None = None,
    error: str | None = None,
    grade: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The one shape of a results.jsonl line."""
    return {
        "task": task,
        "sample": sample,
        "seed": seed,
        "resolved": bool(resolved) and error is None,
        "reward": float(reward),
        "turns": int(turns),
        "tokens": int(tokens),
        "finish_reason": finish_reason,
        "patch": patch,
        "timing": {k: round(float(v), 4) for k, v in (timing or {}).items()},
        "error": error,
        "grade": dict(grade or {}),
    }


def settings_key(config: "EvalConfig") -> str:
    """A digest of what decides a sample's outcome (model, engine, agent incl. sampling, env,
    seed); not samples, ks, workers, out or retry_errors, so adding samples still resumes."""
    settings = {"model": config.model, "seed": config.seed, "engine": config.engine.model_dump(mode="json"),
                "agent": config.agent.model_dump(mode="json"), "env": config.env.model_dump(mode="json")}
    return settings_digest(settings)


class ResultsStore:
    """results.jsonl: append-only; for a (task, sample) pair the last line wins.

    With `settings` (a `settings_key`), every appended row is stamped with it and rows written
    under other settings (another model, temperature, turn budget, ...) are ignored on load,
    so a re-run with changed settings samples again instead of reporting the old outcomes."""

    def __init__(self, out_dir: str, settings: str | None = None) -> None:
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, RESULTS_FILE)
        self.settings = settings
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}
        self.stale = 0  # rows ignored: written under other settings
        self._needs_newline = False  # a torn last line must not swallow the next record
        self._load()
        if self.stale:
            log.warning("%s: %d row(s) were written under other eval settings (model, engine, agent, env or "
                        "seed); they are ignored and their samples run again", self.path, self.stale)

    def _load(self) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as raw:
            raw.seek(0, os.SEEK_END)
            if raw.tell():
                raw.seek(-1, os.SEEK_END)
                self._needs_newline = raw.read(1) != b"\n"
        with open(self.path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    key = (str(row["task"]), int(row["sample"]))
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    # A run killed mid-write leaves a torn last line: that sample simply runs again.
                    log.warning("%s:%d: unreadable results line ignored (its sample will re-run)", self.path, lineno)
                    continue
                if self.settings is not None and row.get("settings") != self.settings:
                    self.stale += 1
                    continue
                self.rows[key] = row

    def is_done(self, task_id: str, sample: int, retry_errors: bool) -> bool:
        row = self.rows.get((task_id, sample))
        if row is None:
            return False
        return not (retry_errors and row.get("error"))

    def append(self, row: dict[str, Any]) -> None:
        if self.settings is not None:
            row = {**row, "settings": self.settings}
        with open(self.path, "a", encoding="utf-8") as fh:
            if self._needs_newline:
                fh.write("\n")
                self._needs_newline = False
            fh.write(json.dumps(row, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.rows[(row["task"], row["sample"])] = row

    def rows_for(self, task_ids: Iterable[str], samples: int) -> list[dict[str, Any]]:
        wanted = set(task_ids)
        return [
            row for (task, sample), row in sorted(self.rows.items())
            if task in wanted and sample < samples
        ]


ProgressCallback = Callable[[dict[str, Any]], None]


async def run_jobs(
    jobs: Sequence[tuple[Any, int]],
    runner: SampleRunner,
    store: ResultsStore,
    *,
    base_seed: int,
    workers: int,
    on_result: ProgressCallback | None = None,
) -> None:
    """Run (task, sample) jobs with at most `workers` in flight; every outcome is stored."""
    gate = asyncio.Semaphore(workers)

    async def one(task: Any, sample: int) -> None:
        seed = sample_seed(base_seed, task.instance_id, sample)
        async with gate:
            started = time.monotonic()
            try:
                row = await runner.run(task, sample, seed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one broken sample is an error line, never a crashed run
                log.warning("task %s sample %d failed: %s", task.instance_id, sample, exc)
                row = result_row(
                    task=task.instance_id, sample=sample, seed=seed, resolved=False,
                    finish_reason="error", error=f"{type(exc).__name__}: {exc}",
                    timing={"total_s": time.monotonic() - started},
                )
        store.append(row)
        if on_result:
            on_result(row)

    await asyncio.gather(*(one(task, sample) for task, sample in jobs))


def pending_jobs(tasks: Sequence[Any], store: ResultsStore, samples: int, retry_errors: bool) -> list[tuple[Any, int]]:
    return [
        (task, s) for task in tasks for s in range(samples)
        if not store.is_done(task.instance_id, s, retry_errors)
    ]


async def evaluate(
    config: EvalConfig,
    tasks: Sequence[Any],
    runner: SampleRunner,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Run what is missing, then write the reports. Returns report.json's content."""
    if not tasks:
        raise ValueError(f"no tasks matched {config.tasks!r}")
    ids = [t.instance_id for t in tasks]
    dupes = sorted(i for i, count in Counter(ids).items() if count > 1)
    if dupes:
        raise ValueError(f"duplicate task ids in {config.tasks!r}: {dupes}")
    store = ResultsStore(config.out, settings=settings_key(config))
    jobs = pending_jobs(tasks, store, config.samples, config.retry_errors)
    skipped = len(tasks) * config.samples - len(jobs)
    if skipped:
        log.info("resuming: %d of %d samples already in %s", skipped, len(tasks) * config.samples, store.path)
    started = time.monotonic()
    with _ProgressBar(len(jobs), enabled=progress) as on_result:
        await run_jobs(jobs, runner, store, base_seed=config.seed, workers=config.workers, on_result=on_result)
    meta = {
        "model": config.model,
        "tasks": config.tasks,
        "samples": config.samples,
        "seed": config.seed,
        "engine": config.engine.model_dump(mode="json"),
        "resumed_samples": skipped,
        "ran_samples": len(jobs),
        "wall_s": round(time.monotonic() - started, 3),
    }
    rows = store.rows_for(ids, config.samples)
    report = write_eval_reports(config.out, rows, config.ks, meta)
    summary = all_errored_summary([row.get("error") for row in rows])
    if summary:  # for the CLI (prints it, exits non-zero); not part of report.json
        report["all_errored"] = summary
    return report


def all_errored_summary(errors: Sequence[str | None], what: str = "sample", limit: int = 3) -> str | None:
    """One line naming the distinct errors, most frequent first, when every sample (episode,
    …: `what`) errored (`errors`: one entry each, None where none); else None."""
    if not errors or not all(errors):
        return None
    distinct = Counter(" ".join(str(e).split())[:500] for e in errors)
    parts = [f"{n}× {message}" for message, n in distinct.most_common(limit)]
    if len(distinct) > limit:
        parts.append(f"{len(distinct) - limit} other distinct error(s)")
    return f"every {what} errored ({len(errors)} of {len(errors)}): " + "; ".join(parts)


class _ProgressBar:
    """A rich progress bar with the running solve count; a no-op when disabled."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled and total > 0
        self.resolved = 0
        self.errors = 0

    def __enter__(self) -> ProgressCallback:
        if not self.enabled:
            return lambda row: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("eval"), BarColumn(), MofNCompleteColumn(),
            TextColumn("resolved {task.fields[resolved]} · errors {task.fields[errors]}"),
            TimeElapsedColumn(),
        )
        self._progress.start()
        self._task = self._progress.add_task("eval", total=self.total, resolved=0, errors=0)
        return self._advance

    def _advance(self, row: dict[str, Any]) -> None:
        self.resolved += int(bool(row.get("resolved")))
        self.errors += int(bool(row.get("error")))
        self._progress.update(self._task, advance=1, resolved=self.resolved, errors=self.errors)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._progress.stop()




class AgentSampleRunner:
    """The real sample: one agent episode played by the shared `EpisodeRunner` (so eval uses
    the same environments, warm pools and tamper-proof grader as rollout and training).

    Tasks travel as objects: nothing here touches host paths inside containers, so the
    evaluator can run in a container that drives sibling containers via the socket.
    """

    def __init__(self, engine: Any, tokenizer: Any, agent_config: Any, episodes: Any) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.agent_config = agent_config
        self.episodes = episodes  # agent_rl.rollout.runner.EpisodeRunner; its owner closes it

    async def run(self, task: Any, sample: int, seed: int) -> dict[str, Any]:
        traj = await self.episodes.episode(task, self.engine, self.tokenizer, self.agent_config, seed=seed,
                                           group_index=sample)
        grade = dict(traj.grade or {})
        return result_row(
            task=task.instance_id,
            sample=sample,
            seed=seed,
            resolved=bool(grade.get("resolved")),
            reward=traj.reward,
            turns=traj.num_turns,
            tokens=traj.num_sampled_tokens,
            finish_reason=traj.finish_reason,
            patch=str(getattr(traj, "patch", "") or ""),
            timing=traj.timings,
            error=traj.error,
            grade=_grade_summary(grade),
        )


def _grade_summary(grade: Mapping[str, Any]) -> dict[str, Any]:
    """The grade without the bulky console tail: enough to see why a sample failed."""
    keep = ("resolved", "patch_exists", "patch_successfully_applied", "fraction_passed", "error", "tamper",
            "dropped_files", "tests_status")
    return {k: grade[k] for k in keep if k in grade}


async def run_eval(config: EvalConfig, *, progress: bool = True) -> dict[str, Any]:
    """Load the tasks, build the engine and the agent, evaluate, close the engine."""
    from agent_rl.rollout.agent import check_template
    from agent_rl.engines.capabilities import EVALUATION, require
    from agent_rl.engines.factory import make_engine
    from agent_rl.rollout.runner import EpisodeRunner
    from envs.tasks import load_tasks

    from envs.task_images import require_prebuilt_images

    tasks = load_tasks(config.tasks)
    require_prebuilt_images(tasks)  # every missing dataset image named now, before the model loads
    agent_config, env_config, engine_config = config.agent, config.env, config.engine
    engine = make_engine(engine_config)
    try:
        require(engine, EVALUATION, "evaluate")
        tokenizer = getattr(engine, "tokenizer", None)
        if tokenizer is None:
            from agent_rl.engines.models import load_tokenizer

            # A served model's name need not be loadable here: engine.tokenizer names the tokenizer.
            tokenizer = load_tokenizer(engine_config.tokenizer or config.model)
        check_template(tokenizer, agent_config)
        async with EpisodeRunner(env_config, concurrency=config.workers) as episodes:
            await episodes.aprepare(tasks, config.samples)  # warm pools (use_pool) for the first tasks, within budget
            runner = AgentSampleRunner(engine, tokenizer, agent_config, episodes)
            return await evaluate(config, tasks, runner, progress=progress)
    finally:
        await engine.close()
