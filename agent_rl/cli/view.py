"""`agent-rl view RUN_DIR`: browse a run's trajectories in a web page (loopback) or one static file."""
from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent_rl.view.runs import RunIndex
    from agent_rl.view.tokens import LazyTokenizer


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "view",
        help="browse a run's trajectories in a local web page",
        description="Index the episodes under RUN_DIR (rollouts/step-N.jsonl of `agent-rl train`, "
        "trajectories.jsonl of `agent-rl rollout`, results.jsonl of `agent-rl eval`, at any depth) and "
        "serve a page to filter them by task, step, reward and finish reason and open one: its turns "
        "(thought, action, observation), timings, tokens coloured by loss mask or logprob, grade report "
        "and patch. Token text needs the run's tokenizer (config.yaml model.name); without it ids are shown.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run's output directory (or one .jsonl file)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one")
    p.add_argument("--static", metavar="OUT.html", default=None,
                   help="write one self-contained HTML file instead of serving")
    p.add_argument("--max-episodes", type=int, default=None, help="--static: keep only the first N episodes")
    tok = p.add_mutually_exclusive_group()
    tok.add_argument("--tokenizer", default=None, help="tokenizer alias/dir (default: the run's config.yaml)")
    tok.add_argument("--no-tokenizer", action="store_true", help="show token ids, load no tokenizer")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent_rl.view.runs import NoEpisodesError, RunIndex
    from agent_rl.view.tokens import LazyTokenizer, run_tokenizer_spec

    if args.max_episodes is not None and args.max_episodes < 1:
        print("agent-rl view: --max-episodes must be at least 1", file=sys.stderr)
        return 2
    try:
        index = RunIndex.open(args.run_dir)
    except NoEpisodesError as exc:
        print(f"agent-rl view: {exc}", file=sys.stderr)
        return 2
    if index.skipped_total:
        where = ", ".join(f"{src} ({n})" for src, n in index.skipped.items())
        print(f"agent-rl view: skipped {index.skipped_total} malformed line(s): {where}", file=sys.stderr)
    spec = None if args.no_tokenizer else (args.tokenizer or run_tokenizer_spec(index.root))
    tokenizer = LazyTokenizer(spec)
    if args.static:
        from agent_rl.view.static import write_static

        size = write_static(index, tokenizer, args.static, max_episodes=args.max_episodes)
        if tokenizer.note:
            print(f"agent-rl view: {tokenizer.note}", file=sys.stderr)
        print(f"agent-rl view: wrote {args.static} ({len(index.episodes)} episodes, {size / 1e6:.1f} MB)")
        return 0
    return _serve(index, tokenizer, args.host, args.port)


def _serve(index: RunIndex, tokenizer: LazyTokenizer, host: str, port: int) -> int:
    import asyncio
    import signal

    from agent_rl.view.server import serve

    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"agent-rl view: listening on {host}: anyone who can reach it can read these trajectories",
              file=sys.stderr)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # Tests and scripts parse this line to find the page.
        await serve(index, tokenizer, stop, host=host, port=port, on_ready=lambda url: print(
            f"agent-rl view: {len(index.episodes)} episodes at {url}", flush=True))

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"agent-rl view: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    return 0
