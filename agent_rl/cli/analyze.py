"""`agent-rl analyze RUN_DIR [--against CKPT]`: update sparsity and rank, two-phase dynamics,
the compute curve and base-vs-trained pass@k of a training run, as analysis.json,
analysis.md and PNGs."""
from __future__ import annotations

import argparse
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="what a training run changed and how it learned (sparsity, two phases, compute curve, pass@k)",
        description="Analyse a `train` or `pipeline` output directory. Writes analysis.json, analysis.md and "
        "PNGs: the fraction of parameters the update changed (dtype-aware) per layer type and layer and the "
        "effective rank of each matrix's update; planning vs execution entropy over training and where "
        "planning starts rising while execution is flat; a sigmoid fit of reward against compute with "
        "bootstrap intervals; base vs trained pass@k at every k and where the curves cross. A section "
        "without data (no checkpoint, too few steps, no evals) is reported as skipped.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run's output directory")
    p.add_argument("--against", metavar="CKPT", default=None,
                   help="the weights before the update: 'base' (default: the run's model.name), a step "
                   "number, a checkpoint/HF/adapter directory or a model alias")
    p.add_argument("--checkpoint", metavar="CKPT", default=None,
                   help="the weights after the update (default: the run's latest checkpoint); same forms")
    p.add_argument("--out", default=None, help="output directory (default: RUN_DIR/analysis)")
    p.add_argument("--compare-dtype", choices=("float32", "bfloat16", "float16"), default=None,
                   help="round both ends to this dtype before comparing (default: the coarser stored dtype)")
    p.add_argument("--rank-rtol", type=float, default=1e-6, help="numerical rank counts σ > RTOL·σ_max")
    p.add_argument("--metric", default="reward_mean", help="metrics.jsonl key for the compute curve "
                   "(reward_mean, solve_rate, ...)")
    p.add_argument("--compute", choices=("trained_tokens", "sampled_tokens", "hours", "device_hours", "cpu_hours"), default="trained_tokens",
                   help="compute axis, cumulated over steps")
    p.add_argument("--r0", type=float, default=None, help="fix R0 of the sigmoid (default: fitted)")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for the fit's intervals")
    p.add_argument("--onset-window", type=int, default=None, help="steps per window for the planning-rise onset")
    p.add_argument("--base-eval", action="append", default=[], metavar="DIR",
                   help="an `agent-rl eval` directory of the base model (repeat with --trained-eval)")
    p.add_argument("--trained-eval", action="append", default=[], metavar="DIR",
                   help="the matching eval directory of the trained model")
    p.add_argument("--skip-weights", action="store_true", help="leave out the sparsity/rank section")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agent_rl.analysis.analyze import AnalyzeOptions, analyze_run
    from agent_rl.analysis.report import write_report

    if len(args.base_eval) != len(args.trained_eval):
        print("analyze: give --base-eval and --trained-eval in pairs", file=sys.stderr)
        return 2
    if args.bootstrap < 0 or not 0 < args.rank_rtol < 1:
        print("analyze: --bootstrap must be >= 0 and --rank-rtol in (0, 1)", file=sys.stderr)
        return 2
    options = AnalyzeOptions(
        against=args.against, checkpoint=args.checkpoint, compare_dtype=args.compare_dtype,
        rank_rtol=args.rank_rtol, curve_metric=args.metric, compute_axis=args.compute, r0=args.r0,
        bootstrap=args.bootstrap, onset_window=args.onset_window,
        eval_pairs=list(zip(args.base_eval, args.trained_eval)), skip_weights=args.skip_weights,
    )
    try:
        analysis = analyze_run(args.run_dir, options)
    except (FileNotFoundError, ValueError) as exc:
        print(f"analyze: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.run_dir) / "analysis"
    written = write_report(analysis, out)
    for key in ("update", "two_phase", "compute_curve", "pass_at_k"):
        section = analysis[key]
        if "skipped" in section:
            print(f"{key}: skipped ({section['skipped']})")
    print("wrote " + ", ".join(str(p) for p in written))
    return 0
