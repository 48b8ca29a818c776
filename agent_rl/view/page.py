"""The viewer's one HTML page: markup, style and script inline, nothing loaded from a network.

`render_page()` is the live page (its script asks the server's /api); `render_page(data)` embeds
the whole run as JSON for `--static`, so the file opens from disk on a machine without the run.
A Content-Security-Policy keeps the page from reaching anything but its own server.
"""
from __future__ import annotations

import html
import json
from typing import Any

from agent_rl.view.page_script import SCRIPT

_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src data:")

STYLE = """
:root { font: 14px/1.4 system-ui, sans-serif; color: #222; }
body { margin: 0; }
body > header { padding: 8px 14px; background: #24323f; color: #eee; }
body > header h1 { font-size: 16px; margin: 0; display: inline; }
#run-root { font-family: monospace; margin-left: 8px; }
#run-info { margin-left: 12px; color: #bcd; }
#skipped { background: #fff3cd; color: #664d03; padding: 4px 14px; }
#status.error { background: #f8d7da; color: #842029; padding: 4px 14px; }
main { display: flex; height: calc(100vh - 40px); }
#list-pane { width: 38%; min-width: 320px; overflow: auto; border-right: 1px solid #ccc; }
#episode { flex: 1; overflow: auto; padding: 0 16px 40px; }
form#filters { display: flex; flex-wrap: wrap; gap: 6px; padding: 8px; background: #f4f6f8;
               position: sticky; top: 0; border-bottom: 1px solid #ddd; }
form#filters label { display: flex; flex-direction: column; font-size: 11px; color: #555; }
form#filters input[type=number] { width: 5em; }
table { border-collapse: collapse; width: 100%; }
th, td { padding: 3px 6px; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
td.task { max-width: 16em; overflow: hidden; text-overflow: ellipsis; font-family: monospace; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.episode { cursor: pointer; }
tr.episode:hover { background: #eef4fb; }
tr.episode.selected { background: #d7e7f8; }
tr.episode.resolved td:first-child { border-left: 4px solid #2e9e44; }
tr.episode.failed td:first-child { border-left: 4px solid #c0392b; }
dl.kv { display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; margin: 6px 0; }
dl.kv dt { color: #666; } dl.kv dd { margin: 0; font-family: monospace; }
section h3, details.prompt summary { font-size: 15px; margin: 18px 0 6px; cursor: default; }
article.turn { border: 1px solid #d6dce2; border-radius: 6px; margin: 10px 0; padding: 4px 10px; }
article.turn h4 { margin: 4px 0; font-size: 13px; color: #333; }
.label { font-size: 11px; text-transform: uppercase; color: #777; margin-top: 4px; }
pre { white-space: pre-wrap; word-break: break-word; margin: 2px 0 6px; padding: 6px; background: #f7f7f7;
      border-radius: 4px; font-size: 12px; max-height: 28em; overflow: auto; }
.thought pre { background: #fbfaf3; } .action pre { background: #eef6ee; } .observation pre { background: #f1f3f8; }
.kind { font-size: 11px; padding: 1px 6px; border-radius: 8px; background: #ddd; }
.kind.submit { background: #b9e4c2; } .kind.invalid { background: #f3c1c1; }
.note { color: #666; font-style: italic; }
pre.error { background: #fbe9e9; }
.strip { font: 12px/1.9 monospace; white-space: pre-wrap; word-break: break-all; border: 1px solid #ddd;
         padding: 6px; max-height: 40em; overflow: auto; }
.tok { border-radius: 2px; box-shadow: inset -1px 0 0 rgba(0, 0, 0, .15); }  /* token boundaries */
.by-mask .tok.prompt, .legend .tok.prompt { background: #eceff1; color: #777; }
.by-mask .tok.env, .legend .tok.env { background: #ffe9c7; }
.by-mask .tok.sampled, .legend .tok.sampled { background: #c9e3ff; }
.by-lp .tok.prompt, .by-lp .tok.env { color: #aaa; }
.by-lp .tok.sampled { background: var(--lpc); }
.tok.flash { outline: 2px solid #d9480f; }
.modes button { font-size: 12px; } .modes button.on { font-weight: bold; }
.legend { font-size: 12px; margin: 4px 0; } .swatch { padding: 0 4px; font-family: monospace; }
pre.diff .add { color: #116329; background: #e6ffec; } pre.diff .del { color: #82071e; background: #ffebe9; }
pre.diff .hunk { color: #0550ae; } pre.diff .file { font-weight: bold; }
.tests-group ul { margin: 2px 0 6px; font-family: monospace; font-size: 12px; }
.tests-group.failure b { color: #c0392b; } .tests-group.success b { color: #2e7d32; }
"""

_BODY = """
<header><h1>agent-rl view</h1><span id="run-root"></span><span id="run-info"></span></header>
<div id="skipped" hidden></div>
<div id="status"></div>
<main>
  <div id="list-pane">
    <form id="filters">
      <label>task <input id="f-task" list="task-list" placeholder="substring"></label>
      <datalist id="task-list"></datalist>
      <label>step <select id="f-step"><option value="">any</option></select></label>
      <label>reward ≥ <input id="f-min_reward" type="number" step="any"></label>
      <label>reward ≤ <input id="f-max_reward" type="number" step="any"></label>
      <label>finish <select id="f-finish_reason"><option value="">any</option></select></label>
      <label>&nbsp;<button type="submit">filter</button></label>
      <label>&nbsp;<button type="button" id="f-reset">reset</button></label>
      <label>&nbsp;<span id="list-count"></span></label>
    </form>
    <table>
      <thead><tr><th>#</th><th>step</th><th>task</th><th>reward</th><th>finish</th><th>turns</th>
      <th title="sampled / total">tokens</th></tr></thead>
      <tbody id="episode-rows"></tbody>
    </table>
  </div>
  <div id="episode"></div>
</main>
"""


def render_page(data: dict[str, Any] | None = None, *, title: str = "agent-rl view") -> str:
    """The page; with `data` ({"run", "episodes", "details"}) it needs no server."""
    embedded = ""
    if data is not None:
        # `<` escaped so no text in the run (a `</script>` in a model reply) can end the block.
        blob = json.dumps(data, separators=(",", ":")).replace("<", "\\u003c")
        embedded = f'<script type="application/json" id="view-data">{blob}</script>\n'
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>{_BODY}"
        f"{embedded}<script>{SCRIPT}</script>\n</body></html>\n"
    )
