"""Evaluation reports: report.json / report.md / pass@k plots, and the comparison of several runs.

Everything here reads plain dicts (one per sample, as written to results.jsonl) and writes
files; nothing runs a model or a container. Plots use matplotlib's object API with the Agg
canvas so that no global backend is touched and no display is needed.
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

from agent_rl.eval.passk import aggregate_pass_at_k, default_ks, pass_at_1_mean_stderr

log = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
PASS_AT_K_PNG = "pass_at_k.png"


class ReportError(ValueError):
    """An evaluation directory is missing or holds an unreadable report."""


def task_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
    """task id → (n, c). An errored sample counts as a sample that did not resolve."""
    n: Counter[str] = Counter()
    c: Counter[str] = Counter()
    for row in rows:
        n[row["task"]] += 1
        if row.get("resolved") and not row.get("error"):
            c[row["task"]] += 1
    return {t: (n[t], c[t]) for t in sorted(n)}


def _error_kind(error: str) -> str:
    # "SandboxDied: container gone" → "SandboxDied"; free text keeps its first words.
    head = error.split(":", 1)[0].strip()
    return head[:60] or "error"


def build_eval_report(
    rows: Sequence[Mapping[str, Any]],
    ks: Sequence[int] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Totals, per-task c/n, pass@k for every requested k ≤ n, pass@1 mean ± stderr, errors."""
    counts = task_counts(rows)
    min_n = min((n for n, _ in counts.values()), default=0)
    wanted = list(ks) if ks else (default_ks(min_n) if min_n else [])
    pass_k = aggregate_pass_at_k(counts, wanted)
    skipped_ks = [k for k in wanted if k not in pass_k]
    errors = [r for r in rows if r.get("error")]
    per_task: dict[str, dict[str, Any]] = {}
    for task, (n, c) in counts.items():
        task_errors = sum(1 for r in errors if r["task"] == task)
        per_task[task] = {"n": n, "c": c, "errors": task_errors, "pass@1": c / n}
    p1 = pass_at_1_mean_stderr(list(counts.values())) if counts else None
    finished = [r for r in rows if not r.get("error")]
    return {
        "meta": dict(meta or {}),
        "totals": {
            "tasks": len(counts),
            "samples": len(rows),
            "resolved": sum(c for _, c in counts.values()),
            "errors": len(errors),
            "min_samples_per_task": min_n,
            "mean_turns": _mean(r.get("turns", 0) for r in finished),
            "mean_tokens": _mean(r.get("tokens", 0) for r in finished),
            "sample_seconds": round(sum(float(r.get("timing", {}).get("total_s", 0.0)) for r in rows), 3),
        },
        "pass_at_k": {str(k): v for k, v in pass_k.items()},
        "ks_skipped": skipped_ks,  # requested k larger than some task's sample count
        "pass_at_1": {"mean": p1.mean, "stderr": p1.stderr} if p1 else None,
        "per_task": per_task,
        "error_counts": dict(sorted(Counter(_error_kind(r["error"]) for r in errors).items())),
        "finish_reasons": dict(sorted(Counter(str(r.get("finish_reason", "")) for r in rows).items())),
    }


def _mean(values: Iterable[float]) -> float:
    vals = list(values)
    return round(sum(vals) / len(vals), 3) if vals else 0.0


def render_eval_markdown(report: Mapping[str, Any]) -> str:
    meta = report.get("meta", {})
    totals = report["totals"]
    lines = [f"# Evaluation: {meta.get('model', '?')} on {meta.get('tasks', '?')}", ""]
    p1 = report.get("pass_at_1")
    if p1:
        lines.append(f"**pass@1 = {p1['mean']:.3f} ± {p1['stderr']:.3f}** (mean over tasks ± standard error)")
        lines.append("")
    lines += [
        f"- tasks: {totals['tasks']}, samples: {totals['samples']} (≥ {totals['min_samples_per_task']} per task)",
        f"- resolved samples: {totals['resolved']}, errored samples: {totals['errors']}",
        f"- mean turns: {totals['mean_turns']}, mean sampled tokens: {totals['mean_tokens']}",
        "",
        "## pass@k (unbiased: 1 − C(n−c,k)/C(n,k), averaged over tasks)",
        "",
        "| k | pass@k |",
        "|---:|---:|",
    ]
    lines += [f"| {k} | {v:.4f} |" for k, v in report["pass_at_k"].items()]
    if report.get("ks_skipped"):
        lines += ["", f"Skipped k (more than the samples of some task): {report['ks_skipped']}"]
    lines += ["", "## Per task", "", "| task | c / n | pass@1 | errors |", "|---|---:|---:|---:|"]
    for task, t in report["per_task"].items():
        lines.append(f"| {task} | {t['c']} / {t['n']} | {t['pass@1']:.3f} | {t['errors']} |")
    if report.get("error_counts"):
        lines += ["", "## Errors", "", "| kind | count |", "|---|---:|"]
        lines += [f"| {kind} | {n} |" for kind, n in report["error_counts"].items()]
    lines += ["", "## Finish reasons", "", "| reason | count |", "|---|---:|"]
    lines += [f"| {reason or '(none)'} | {n} |" for reason, n in report["finish_reasons"].items()]
    return "\n".join(lines) + "\n"


def plot_pass_at_k(curves: Mapping[str, Mapping[int, float]], path: str, title: str) -> bool:
    """One line per curve, k on a log-2 axis, pass@k in [0, 1]. False (no file) without
    matplotlib: the slim evaluator image has none, and the JSON and Markdown say it all."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.info("matplotlib is not installed: %s not drawn (report.json and report.md have the numbers)", path)
        return False

    fig = Figure(figsize=(6.4, 4.2), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    all_ks: set[int] = set()
    for label, curve in curves.items():
        ks = sorted(curve)
        all_ks.update(ks)
        ax.plot(ks, [curve[k] for k in ks], marker="o", label=label)
    if all_ks:
        ax.set_xscale("log", base=2)
        ticks = sorted(all_ks)
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(k) for k in ticks])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("k (samples per task, log2)")
    ax.set_ylabel("pass@k")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    return True


def write_eval_reports(out_dir: str, rows: Sequence[Mapping[str, Any]], ks: Sequence[int] | None,
                       meta: Mapping[str, Any]) -> dict[str, Any]:
    report = build_eval_report(rows, ks, meta)
    _write_json(os.path.join(out_dir, REPORT_JSON), report)
    with open(os.path.join(out_dir, REPORT_MD), "w", encoding="utf-8") as fh:
        fh.write(render_eval_markdown(report))
    curve = {int(k): v for k, v in report["pass_at_k"].items()}
    label = str(meta.get("model", "model"))
    plot_pass_at_k({label: curve}, os.path.join(out_dir, PASS_AT_K_PNG), f"pass@k on {meta.get('tasks', '')}")
    return report


def _write_json(path: str, data: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, default=str)
    os.replace(tmp, path)  # a reader never sees half a report


# --- comparison of several evaluations ---------------------------------------------------


def load_eval_report(eval_dir: str) -> dict[str, Any]:
    path = os.path.join(eval_dir, REPORT_JSON)
    if not os.path.isfile(path):
        raise ReportError(f"{eval_dir}: no {REPORT_JSON} (is it an `agent-rl eval` output directory?)")
    try:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(report, dict) or not isinstance(report.get("pass_at_k"), dict):
        raise ReportError(f"{path}: has no pass_at_k table")
    return report


def _labels(eval_dirs: Sequence[str]) -> list[str]:
    labels = [os.path.basename(os.path.normpath(d)) or d for d in eval_dirs]
    if len(set(labels)) != len(labels):
        labels = [os.path.normpath(d) for d in eval_dirs]
    return labels


def crossover_k(baseline: Mapping[int, float], other: Mapping[int, float]) -> int | None:
    """Smallest k at which the baseline's pass@k reaches the other's (ProRL's catch-up point).

    None when the baseline stays below at every shared k. When the baseline is never behind,
    that is k=1 — there was nothing to catch up on.
    """
    for k in sorted(set(baseline) & set(other)):
        if baseline[k] >= other[k] - 1e-12:
            return k
    return None


def build_comparison(eval_dirs: Sequence[str]) -> dict[str, Any]:
    if len(eval_dirs) < 2:
        raise ReportError("compare needs at least two evaluation directories")
    reports = [load_eval_report(d) for d in eval_dirs]
    labels = _labels(eval_dirs)
    curves = {label: {int(k): float(v) for k, v in r["pass_at_k"].items()} for label, r in zip(labels, reports)}
    shared = sorted(set.intersection(*(set(c) for c in curves.values())))
    base_label = labels[0]
    base = curves[base_label]
    rows = []
    for k in shared:
        row: dict[str, Any] = {"k": k}
        for label in labels:
            row[label] = curves[label][k]
        for label in labels[1:]:
            row[f"{label} - {base_label}"] = curves[label][k] - base[k]
        rows.append(row)
    task_sets = [set(r.get("per_task", {})) for r in reports]
    return {
        "runs": [{"label": l, "dir": d, "meta": r.get("meta", {}), "pass_at_1": r.get("pass_at_1")}
                 for l, d, r in zip(labels, eval_dirs, reports)],
        "baseline": base_label,
        "shared_ks": shared,
        "curves": {label: {str(k): v for k, v in c.items()} for label, c in curves.items()},
        "table": rows,
        "crossover_k": {label: crossover_k(base, curves[label]) for label in labels[1:]},
        "same_tasks": all(s == task_sets[0] for s in task_sets),
    }


def render_comparison_markdown(comp: Mapping[str, Any]) -> str:
    labels = [r["label"] for r in comp["runs"]]
    base = comp["baseline"]
    lines = ["# pass@k comparison", "", f"Baseline: **{base}**.", ""]
    if not comp["same_tasks"]:
        lines += ["> Warning: the runs were evaluated on different task sets.", ""]
    diff_cols = [f"{l} - {base}" for l in labels[1:]]
    header = ["k", *labels, *diff_cols]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---:|" * len(header))
    for row in comp["table"]:
        cells = [str(row["k"])] + [f"{row[l]:.4f}" for l in labels] + [f"{row[c]:+.4f}" for c in diff_cols]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Where the baseline catches up", ""]
    for label, k in comp["crossover_k"].items():
        if k is None:
            lines.append(f"- {base} stays below {label} at every shared k (up to {max(comp['shared_ks'], default=0)}).")
        elif k == min(comp["shared_ks"]):
            lines.append(f"- {base} is already at or above {label} at k={k}.")
        else:
            lines.append(f"- {base} catches up with {label} at k={k}.")
    return "\n".join(lines) + "\n"


def write_comparison(eval_dirs: Sequence[str], out_dir: str) -> dict[str, Any]:
    comp = build_comparison(eval_dirs)
    os.makedirs(out_dir, exist_ok=True)
    _write_json(os.path.join(out_dir, "compare.json"), comp)
    with open(os.path.join(out_dir, "compare.md"), "w", encoding="utf-8") as fh:
        fh.write(render_comparison_markdown(comp))
    curves = {label: {int(k): v for k, v in c.items()} for label, c in comp["curves"].items()}
    plot_pass_at_k(curves, os.path.join(out_dir, "pass_at_k_compare.png"), "pass@k comparison")
    return comp
