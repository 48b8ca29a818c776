"""`agent-rl serve`: an OpenAI-compatible server over the HF engine."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API (HF transformers engine)",
        description="Serve a model with /v1/completions, /v1/chat/completions and "
        "/v1/load_checkpoint. Prints the URL once the model is loaded; stops on SIGTERM.",
    )
    parser.add_argument("--model", default="smollm2-135m",
                        help="model alias (smollm2-135m) or local HF checkpoint dir")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16, float16")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--served-model-name", default=None, help="name shown in /v1/models")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from agent_rl.engines.hf import HFEngine
    from agent_rl.engines.models import model_name
    from agent_rl.engines.serve import serve

    try:
        engine = HFEngine(
            args.model,
            device=args.device,
            dtype=args.dtype,
            max_batch_size=args.max_batch_size,
            batch_wait_ms=args.batch_wait_ms,
        )
    except ValueError as exc:  # unknown model, bad dtype/device: say which
        print(f"agent-rl serve: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(
            engine,
            model_name=args.served_model_name or model_name(args.model),
            base_spec=args.model,
            host=args.host,
            port=args.port,
        ))
    except OSError as exc:  # port in use, address not available
        print(f"agent-rl serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        engine.close_sync()
        return 1
    return 0
