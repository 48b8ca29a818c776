"""analysis.json, analysis.md and the PNGs, from the dict agent_rl.analysis.analyze builds.

Plots use matplotlib's object API on the Agg canvas (no global backend, no display), one
figure per file: sparsity.png (changed fraction per layer type and per layer),
update_rank.png (effective rank of each matrix's update against its full rank),
two_phase.png (planning vs execution entropy and logprob over training, the onset marked),
compute_curve.png (the points, the fit and its extrapolation), pass_at_k.png (base vs trained).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

ANALYSIS_JSON = "analysis.json"
ANALYSIS_MD = "analysis.md"


def _figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (7.0, 4.2)) -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _ok(section: Any) -> bool:
    return isinstance(section, Mapping) and "skipped" not in section


def write_report(analysis: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write every file; returns their paths (PNGs only for the sections that have data)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = [_write_json(out / ANALYSIS_JSON, analysis)]
    plots = {"update": [_plot_sparsity, _plot_ranks], "two_phase": [_plot_two_phase],
             "compute_curve": [_plot_compute_curve], "pass_at_k": [_plot_passk]}
    for key, functions in plots.items():
        section = analysis.get(key)
        if _ok(section):
            for plot in functions:
                path = plot(section, out)
                if path is not None:
                    written.append(path)
    (out / ANALYSIS_MD).write_text(render_markdown(analysis), encoding="utf-8")
    written.insert(1, out / ANALYSIS_MD)
    return written


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _write_json(path: Path, data: Any) -> Path:
    tmp = path.with_suffix(".json.tmp")
    # NaN/inf (a bootstrap that diverged) become null: JSON has neither.
    tmp.write_text(json.dumps(_finite(data), indent=2, default=str, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------- plots


def _plot_sparsity(update: Mapping[str, Any], out: Path) -> Path:
    fig, axes = _figure(1, 2, (11.0, 4.2))
    by_type, by_layer = update["by_type"], update["by_layer"]
    ax = axes[0][0]
    ax.bar(list(by_type), [100 * v["fraction"] for v in by_type.values()], color="tab:blue")
    ax.set_ylabel("parameters changed (%)")
    ax.set_title("by layer type")
    ax.tick_params(axis="x", rotation=45)
    ax = axes[0][1]
    layers = sorted(by_layer, key=int)
    ax.plot([int(k) for k in layers], [100 * by_layer[k]["fraction"] for k in layers], marker="o")
    ax.set_xlabel("layer")
    ax.set_title("by layer")
    for a in (axes[0][0], axes[0][1]):
        a.set_ylim(0, 105)
        a.grid(alpha=0.3)
    fig.suptitle(f"update sparsity: {update['before']} → {update['after']} "
                 f"({100 * update['overall']['fraction']:.1f}% changed)")
    fig.tight_layout()
    path = out / "sparsity.png"
    fig.savefig(path)
    return path


def _plot_ranks(update: Mapping[str, Any], out: Path) -> Path | None:
    ranks = {k: v for k, v in update["ranks"].items() if v["numerical_rank"] > 0}
    if not ranks:
        return None
    fig, axes = _figure()
    ax = axes[0][0]
    ax.scatter([v["full_rank"] for v in ranks.values()], [v["effective_rank"] for v in ranks.values()], s=14)
    top = max(v["full_rank"] for v in ranks.values())
    ax.plot([0, top], [0, top], color="grey", linestyle="--", label="full rank")
    ax.set_xlabel("min(m, n) of the matrix")
    ax.set_ylabel("effective rank of ΔW (exp entropy)")
    ax.set_title("rank of each matrix's update")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = out / "update_rank.png"
    fig.savefig(path)
    return path


def _plot_two_phase(section: Mapping[str, Any], out: Path) -> Path:
    series = section["series"]
    steps = series["steps"]
    fig, axes = _figure(1, 2, (11.0, 4.2))
    for ax, kind, title in ((axes[0][0], "entropy", "entropy"), (axes[0][1], "logprob", "mean logprob")):
        ax.plot(steps, series[f"planning_{kind}"], label="planning", marker="o" if len(steps) < 30 else None)
        ax.plot(steps, series[f"execution_{kind}"], label="execution", marker="o" if len(steps) < 30 else None)
        onset = section.get("onset", {}).get("step")
        if onset is not None:
            ax.axvline(onset, color="red", linestyle="--", label=f"planning rises, execution flat (step {onset})")
        ax.set_xlabel("step")
        ax.set_title(f"{title} on sampled tokens")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "two_phase.png"
    fig.savefig(path)
    return path


def _plot_compute_curve(section: Mapping[str, Any], out: Path) -> Path:
    fig, axes = _figure()
    ax = axes[0][0]
    compute, values = section["compute"], section["values"]
    ax.scatter(compute, values, s=14, label=section["metric"])
    fit = section.get("fit")
    if fit:
        grid = np.geomspace(min(compute), max(compute) * 10, 200)
        curve = fit["R0"] + (fit["A"] - fit["R0"]) / (1 + (fit["C_mid"] / grid) ** fit["B"])
        inside = grid <= max(compute)
        ax.plot(grid[inside], curve[inside], color="tab:orange", label="fit")
        ax.plot(grid[~inside], curve[~inside], color="tab:orange", linestyle="--", label="extrapolation")
        low, high = fit["intervals"].get("A", (None, None)) if fit["intervals"] else (None, None)
        label = f"A = {fit['A']:.3f}" + (f" [{low:.3f}, {high:.3f}]" if low is not None else "")
        ax.axhline(fit["A"], color="grey", linestyle=":", label=label)
    ax.set_xscale("log")
    ax.set_xlabel(section["axis_label"])
    ax.set_ylabel(section["metric"])
    ax.set_title("reward against compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "compute_curve.png"
    fig.savefig(path)
    return path


def _plot_passk(section: Mapping[str, Any], out: Path) -> Path:
    fig, axes = _figure()
    ax = axes[0][0]
    for pair in section["pairs"]:
        ks = pair["ks"]
        ax.plot(ks, [pair["base"][str(k)] for k in ks], marker=".", label=f"{pair['name']}: base")
        ax.plot(ks, [pair["trained"][str(k)] for k in ks], marker=".", label=f"{pair['name']}: trained")
        if pair["crossing_k"] is not None:
            ax.axvline(pair["crossing_k"], color="red", linestyle="--", label=f"{pair['name']}: cross at k={pair['crossing_k']}")
    ax.set_xscale("log", base=2)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k")
    ax.set_title("pass@k, base vs trained")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "pass_at_k.png"
    fig.savefig(path)
    return path


# ---------------------------------------------------------------------- markdown


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return "—" if value is None else str(value)


def render_markdown(analysis: Mapping[str, Any]) -> str:
    lines = [f"# Analysis of {analysis['run_dir']}", ""]
    lines += _update_md(analysis.get("update")) + _two_phase_md(analysis.get("two_phase"))
    lines += _curve_md(analysis.get("compute_curve")) + _passk_md(analysis.get("pass_at_k"))
    return "\n".join(lines) + "\n"


def _skipped(title: str, section: Any) -> list[str] | None:
    if _ok(section):
        return None
    why = section.get("skipped") if isinstance(section, Mapping) else "not computed"
    return [f"## {title}", "", f"Skipped: {why}", ""]


def _update_md(update: Any) -> list[str]:
    skipped = _skipped("Update sparsity and rank", update)
    if skipped:
        return skipped
    overall = update["overall"]
    lines = ["## Update sparsity and rank", "", f"{update['before']} → {update['after']}: "
             f"**{100 * overall['fraction']:.2f}%** of {overall['params']:,} parameters changed "
             f"(comparison dtype: {update['compare_dtype']}).", ""]
    lines += [f"- {note}" for note in update["notes"]] + ([""] if update["notes"] else [])
    lines += ["| layer type | parameters | changed | fraction |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['params']:,} | {v['changed']:,} | {100 * v['fraction']:.2f}% |" for k, v in update["by_type"].items()]
    lines += ["", "| layer | fraction changed |", "|---:|---:|"]
    lines += [f"| {k} | {100 * v['fraction']:.2f}% |" for k, v in update["by_layer"].items()]
    lines += ["", f"Effective rank exp(H(σ/Σσ)) of each matrix's update; numerical rank counts "
              f"σ > {update['rank_rtol']:g}·σ_max. Median effective rank / full rank: "
              f"{_fmt(update['median_effective_rank_fraction'])}.", "",
              "| matrix | effective rank | numerical rank | full rank |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['effective_rank']:.1f} | {v['numerical_rank']} | {v['full_rank']} |" for k, v in update["ranks"].items()]
    if update["unmatched_parameters"]:
        lines += ["", f"Parameters on one side only (not compared): {', '.join(update['unmatched_parameters'])}"]
    return lines + [""]


def _two_phase_md(section: Any) -> list[str]:
    skipped = _skipped("Two-phase dynamics", section)
    if skipped:
        return skipped
    s = section["series"]
    lines = ["## Two-phase dynamics", "", "| | first step | last step |", "|---|---:|---:|"]
    for key in ("planning_entropy", "execution_entropy", "planning_logprob", "execution_logprob"):
        lines.append(f"| {key} | {_fmt(s[key][0])} | {_fmt(s[key][-1])} |")
    onset = section.get("onset", {})
    lines.append("")
    if "skipped" in onset:
        lines.append(f"Onset not located: {onset['skipped']}")
    elif onset.get("step") is None:
        lines.append(f"Planning entropy never rose while execution entropy stayed flat (windows of {onset['window']} steps, z = {onset['z']}).")
    else:
        lines.append(f"Planning entropy starts rising while execution entropy is flat at **step {onset['step']}** "
                     f"(windows of {onset['window']} steps, slopes beyond {onset['z']} standard errors of each series' noise, held for {onset.get('sustain', 1)} windows).")
    return lines + [""]


def _curve_md(section: Any) -> list[str]:
    skipped = _skipped("Compute curve", section)
    if skipped:
        return skipped
    fit = section["fit"]
    iv = fit["intervals"]

    def cell(name: str) -> str:
        value = _fmt(fit[name])
        return f"{value} [{_fmt(iv[name][0])}, {_fmt(iv[name][1])}]" if name in iv else value

    return ["## Compute curve", "",
            f"R(C) = R0 + (A − R0) / (1 + (C_mid / C)^B) fitted to {section['metric']} against cumulative "
            f"{section['axis_label']} ({fit['points']} points, RMSE {_fmt(fit['rmse'])}; "
            f"{int(100 * fit['level'])}% bootstrap intervals over {fit['bootstrap_fits']} resamples"
            + ("; R0 fixed" if fit["r0_fixed"] else "") + ").", "",
            "| parameter | value [interval] |", "|---|---|",
            f"| A (asymptote) | {cell('A')} |", f"| C_mid | {cell('C_mid')} |", f"| B | {cell('B')} |",
            f"| R0 | {cell('R0')} |", ""]


def _passk_md(section: Any) -> list[str]:
    skipped = _skipped("pass@k, base vs trained", section)
    if skipped:
        return skipped
    lines = ["## pass@k, base vs trained", ""]
    for pair in section["pairs"]:
        cross = pair["crossing_k"]
        lines += [f"### {pair['name']}", "", f"{pair['base_dir']} vs {pair['trained_dir']}: "
                  + (f"the curves cross at **k = {cross}**." if cross is not None else "the curves do not cross."), "",
                  "| k | base | trained | trained − base |", "|---:|---:|---:|---:|"]
        for k in pair["ks"]:
            key = str(k)
            lines.append(f"| {k} | {pair['base'][key]:.4f} | {pair['trained'][key]:.4f} | {pair['trained_minus_base'][key]:+.4f} |")
        lines.append("")
    return lines
