"""`agent-rl gateway`: the recording OpenAI-compatible gateway in front of one of our engines."""
from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="serve an OpenAI-compatible gateway that records each session's exact tokens",
        description="Sessions: POST /sessions returns a base URL /s/<id>/v1 for a harness (or use the id as its "
        "API key on /v1); GET /sessions/<id> returns the recording (calls, token-exact segments, splits); "
        "DELETE /sessions/<id> closes it. Sampling follows --temperature/--top-p, not the client, unless "
        "--client-sampling. Prints the URL once the engine is ready; stops on SIGTERM/SIGINT.",
    )
    parser.add_argument("--engine", choices=("hf", "openai", "vllm"), default="hf",
                        help="hf: transformers in this process; openai: an upstream server that returns token "
                        "ids (vLLM's or agent-rl serve); vllm: in-process vLLM (GPU)")
    parser.add_argument("--model", default="smollm2-135m", help="model alias or HF checkpoint dir (for openai: "
                        "the upstream's served model name)")
    parser.add_argument("--tokenizer", default=None, help="openai: tokenizer alias/dir (default: --model)")
    parser.add_argument("--base-url", default=None, help="openai: the upstream server's URL")
    parser.add_argument("--device", default="cpu", help="hf/vllm: cpu, cuda, auto")
    parser.add_argument("--dtype", default=None, help="hf/vllm: float32, bfloat16, float16")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    parser.add_argument("--port", type=int, default=8100, help="port; 0 picks a free one")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-tokens", type=int, default=512, help="per call, default and cap")
    parser.add_argument("--max-context-tokens", type=int, default=None, help="prompt + reply; default: the engine's window")
    parser.add_argument("--client-sampling", action="store_true", help="honour each request's temperature/top_p")
    parser.add_argument("--served-model-name", default=None, help="name shown in /v1/models")
    parser.add_argument("--tool-call-format", default="auto",
                        choices=("auto", "hermes", "mistral", "llama3_json", "pythonic"),
                        help="how the model writes tool calls (auto: from the tokenizer's vocabulary)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    import asyncio
    import sys

    from strictconfig import ConfigError

    try:
        return asyncio.run(_serve(args))
    except (ConfigError, ValueError) as exc:  # bad engine settings: say which
        print(f"agent-rl gateway: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"agent-rl gateway: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1


async def _serve(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from agent_rl.engines.factory import engine_config, make_engine
    from agent_rl.engines.models import load_tokenizer, model_name
    from agent_rl.gateway.server import Gateway, GatewayConfig

    config = engine_config({"kind": args.engine, "model": args.model, "base_url": args.base_url,
                            "device": args.device, "dtype": args.dtype})
    gateway_config = GatewayConfig(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                                   max_context_tokens=args.max_context_tokens, client_sampling=args.client_sampling,
                                   tool_call_format=args.tool_call_format)
    tokenizer = None if args.engine == "hf" else load_tokenizer(args.tokenizer or args.model)
    engine = make_engine(config, tokenizer=tokenizer)
    tokenizer = tokenizer if tokenizer is not None else engine.tokenizer
    name = args.served_model_name or model_name(args.model)
    gateway = Gateway(engine, tokenizer, model_name=name, config=gateway_config)
    try:
        url = await gateway.start(args.host, args.port)
        print(f"agent-rl gateway: {name} at {url}/v1 (sessions: POST {url}/sessions)", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        print("agent-rl gateway: shutting down", flush=True)
    finally:
        await gateway.stop()
        await engine.close()
    return 0
