"""The viewer's HTTP side: the page and a small read-only JSON API over one run's index.

    GET /                          the page
    GET /api/run                   run facts (files, counts, skipped lines, filter values)
    GET /api/episodes?task=&step=&min_reward=&max_reward=&finish_reason=
                                   the matching episodes' summaries
    GET /api/episode/<id>          one episode: turns, token strip, timings, grade, patch
    GET /api/episode/<id>/grade    its grade report (JSON)
    GET /api/episode/<id>/patch    its patch (text)

Loopback by default: trajectories hold task text and model output that a run's owner may not
mean to publish. Opening an episode reads its line from disk and may load the tokenizer, so
that runs in a worker thread and never stalls the event loop.
"""
from __future__ import annotations

import asyncio
import json
from typing import Any, Awaitable, Callable

from aiohttp import web

from agent_rl.view.episode import episode_detail
from agent_rl.view.page import render_page
from agent_rl.view.runs import EpisodeFilter, EpisodeNotFound, RunIndex
from agent_rl.view.tokens import LazyTokenizer

INDEX_KEY = web.AppKey("index", RunIndex)
TOKENIZER_KEY = web.AppKey("tokenizer", LazyTokenizer)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


async def _page(request: web.Request) -> web.Response:
    return web.Response(text=render_page(), content_type="text/html")


async def _run(request: web.Request) -> web.Response:
    index, tokenizer = request.app[INDEX_KEY], request.app[TOKENIZER_KEY]
    return web.json_response(index.describe(tokenizer.spec), dumps=_dumps)


async def _episodes(request: web.Request) -> web.Response:
    index = request.app[INDEX_KEY]
    try:
        flt = EpisodeFilter.from_query(dict(request.query))
    except ValueError as exc:
        return _error(400, str(exc))
    matched = index.filter(flt)
    return web.json_response({"total": len(index.episodes), "matched": len(matched),
                              "episodes": [ep.to_dict() for ep in matched]}, dumps=_dumps)


def _episode_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not text.isdigit():
        raise EpisodeNotFound(f"episode id {text!r} is not a number")
    return int(text)


async def _load(request: web.Request) -> dict[str, Any]:
    index = request.app[INDEX_KEY]
    return await asyncio.to_thread(index.load, _episode_id(request))


async def _episode(request: web.Request) -> web.Response:
    index, tokenizer = request.app[INDEX_KEY], request.app[TOKENIZER_KEY]
    detail = await asyncio.to_thread(episode_detail, index, _episode_id(request), tokenizer)
    return web.json_response(detail, dumps=_dumps)


async def _grade(request: web.Request) -> web.Response:
    grade = (await _load(request)).get("grade") or {}
    return web.Response(text=json.dumps(grade, indent=2) + "\n", content_type="application/json")


async def _patch(request: web.Request) -> web.Response:
    patch = str((await _load(request)).get("patch") or "")
    # text/plain, not text/x-diff: browsers show it instead of downloading it.
    return web.Response(text=patch, content_type="text/plain", charset="utf-8")


@web.middleware
async def _not_found_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except EpisodeNotFound as exc:
        return _error(404, str(exc.args[0]) if exc.args else "no such episode")


def build_app(index: RunIndex, tokenizer: LazyTokenizer) -> web.Application:
    app = web.Application(middlewares=[_not_found_as_json])
    app[INDEX_KEY] = index
    app[TOKENIZER_KEY] = tokenizer
    app.router.add_get("/", _page)
    app.router.add_get("/api/run", _run)
    app.router.add_get("/api/episodes", _episodes)
    app.router.add_get("/api/episode/{id}", _episode)
    app.router.add_get("/api/episode/{id}/grade", _grade)
    app.router.add_get("/api/episode/{id}/patch", _patch)
    return app


async def serve(index: RunIndex, tokenizer: LazyTokenizer, stop: asyncio.Event, *, host: str = "127.0.0.1",
                port: int = 8765, on_ready: Callable[[str], None] | None = None) -> None:
    """Serve until `stop` is set; `on_ready` gets the URL once the socket listens."""
    runner = web.AppRunner(build_app(index, tokenizer), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0][1] if runner.addresses else port  # port 0 → the real one
        shown = f"[{host}]" if ":" in host else host
        if on_ready is not None:
            on_ready(f"http://{shown}:{bound}/")
        await stop.wait()
    finally:
        await runner.cleanup()
