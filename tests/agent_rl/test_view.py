"""`agent-rl view`: index, episode detail and API on a run dir built by the project's own code,
then the page itself in a real headless Chromium (served live and as a static file).

The run is fabricated the way the trainer writes one: `TokenConversation` turns with SmolLM2's
tokenizer and chat template, `Trajectory` rows written with `write_jsonl` to
`rollouts/step-NNNNNN.jsonl`, and a `config.yaml` naming the model. Chromium comes from Debian's
`chromium` package (scripts/setup.sh installs it); without it the browser tests skip, except
under CI=true, where they must run.
"""
from __future__ import annotations

import asyncio
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from agent_rl.view.runs import EpisodeFilter, NoEpisodesError, RunIndex
from agent_rl.view.tokens import LazyTokenizer
from agent_rl.view.turns import split_reply, turn_timings

SYSTEM = "You are a careful software engineer. Work in /testbed. Reply with a thought and one action block."

# (task, step, reward, finish_reason, [(reply, observation or None), ...])
EPISODES = [
    ("calc__add-1", 1, 1.0, "submitted", [
        ("Let me look at calc.py first.\n\n```bash\ncat calc.py\n```",
         "def add(a, b):\n    return a - b\n"),
        ("The operator is wrong; add must use +.\n\n```edit calc.py\n<<<<<<< SEARCH\n    return a - b\n=======\n"
         "    return a + b\n>>>>>>> REPLACE\n```", "Edited calc.py: 1 replacement."),
        ("The fix is in place.\n\n```submit\n```", None),
    ]),
    ("calc__add-1", 1, 0.0, "max_turns", [
        ("I will list the files.\n\n```bash\nls\n```", "calc.py\ntests\n"),
        ("Run the tests.\n\n```bash\npytest -q\n```", "1 failed, 3 passed in 0.05s\n"),
    ]),
    ("strings__upper-2", 2, 0.0, "submitted", [
        ('Check the helper.\n<tool_call>{"name": "view", "arguments": {"path": "strings.py"}}</tool_call>',
         "     1\tdef upper(s):\n     2\t    return s.lower()\n"),
        ("Nothing else to do.\n\n```submit\n```", None),
    ]),
    ("strings__upper-2", 2, 0.0, "error", []),
]


def _grade(task: str, resolved: bool) -> dict:
    from envs.grading import GradeReport

    report = GradeReport(instance_id=task, patch_exists=resolved, patch_successfully_applied=resolved,
                         resolved=resolved, fraction_passed=1.0 if resolved else 0.5)
    report.tests_status["FAIL_TO_PASS"]["success" if resolved else "failure"].append("tests/test_calc.py::test_add")
    report.tests_status["PASS_TO_PASS"]["success"].append("tests/test_calc.py::test_sub")
    return report.to_dict()


def _trajectory(tokenizer, task: str, reward: float, finish: str, turns: list, group_index: int):
    from agent_rl.rollout.chat_template import TokenConversation
    from agent_rl.rollout.trajectory import Trajectory

    if not turns:
        return Trajectory(task_id=task, finish_reason=finish, error="SandboxDied: container exited during reset",
                          group_index=group_index)
    conv = TokenConversation.start(tokenizer, [{"role": "system", "content": SYSTEM},
                                               {"role": "user", "content": f"Fix the bug of {task}."}])
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    for reply, observation in turns:
        ids = tokenizer.encode(reply, add_special_tokens=False) + [end]
        logprobs = [-6.5 if i % 11 == 5 else -0.15 * (i % 4) for i in range(len(ids))]
        conv.add_generation(ids, logprobs)
        if observation is not None:
            conv.add_observation(observation)
    resolved = reward == 1.0
    return Trajectory(
        task_id=task, prompt_ids=conv.prompt_ids, response_ids=conv.response_ids, loss_mask=conv.loss_mask,
        behaviour_logprobs=conv.logprobs, reward=reward, num_turns=len(turns), finish_reason=finish,
        terminated=finish == "submitted", truncated=finish == "max_turns", group_index=group_index,
        messages=conv.messages, grade=_grade(task, resolved),
        patch="--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,2 @@\n def add(a, b):\n-    return a - b\n+    return a + b\n"
        if resolved else "",
        timings={"generation_s": 1.25, "env_s": 0.5, "grading_s": 3.0, "total_s": 4.9},
        token_versions=[0 if m else -1 for m in conv.loss_mask],
        # Per-turn timings on the calc episodes only: the others read like files written before
        # they were kept.
        turn_timings=[{"generation_s": 1.5 + i, "env_s": 0.25, "total_s": 1.8 + i} for i in range(len(turns))]
        if task.startswith("calc") else [],
    )


@pytest.fixture(scope="module")
def smol_tokenizer():
    from agent_rl.engines.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, smol_tokenizer) -> Path:
    """A training run's layout: config.yaml, metrics.jsonl, rollouts/step-NNNNNN.jsonl (one torn line)."""
    from agent_rl.rollout.trajectory import write_jsonl

    root = tmp_path_factory.mktemp("run")
    (root / "rollouts").mkdir()
    (root / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "smollm2-135m"}}), encoding="utf-8")
    by_step: dict[int, list] = {}
    for task, step, reward, finish, turns in EPISODES:
        group = by_step.setdefault(step, [])
        group.append(_trajectory(smol_tokenizer, task, reward, finish, turns, len(group)))
    for step, trajectories in by_step.items():
        write_jsonl(trajectories, str(root / "rollouts" / f"step-{step:06d}.jsonl"))
    with (root / "rollouts" / "step-000002.jsonl").open("a", encoding="utf-8") as fh:
        fh.write('{"task_id": "torn", "prompt_ids": [1, 2\n')  # a run killed mid-write
    (root / "metrics.jsonl").write_text(json.dumps({"step": 1, "reward_mean": 0.5}) + "\n", encoding="utf-8")
    return root


# ------------------------------------------------------------------ index, turns, detail, API

def test_index_reads_steps_and_counts_malformed_lines(run_dir: Path) -> None:
    index = RunIndex.open(run_dir)
    assert [ep.step for ep in index.episodes] == [1, 1, 2, 2]
    assert [ep.task for ep in index.episodes] == [t for t, *_ in EPISODES]
    assert index.skipped == {"rollouts/step-000002.jsonl": 1}
    first = index.episodes[0]
    assert (first.reward, first.finish_reason, first.num_turns, first.resolved) == (1.0, "submitted", 3, True)
    assert first.sampled_tokens > 0 and first.total_tokens > first.sampled_tokens
    assert index.episodes[3].error and index.episodes[3].total_tokens == 0
    assert index.facets()["finish_reasons"] == ["error", "max_turns", "submitted"]


def test_filters(run_dir: Path) -> None:
    index = RunIndex.open(run_dir)
    assert [e.id for e in index.filter(EpisodeFilter(step=2))] == [2, 3]
    assert [e.id for e in index.filter(EpisodeFilter(task="CALC", min_reward=0.5))] == [0]
    assert [e.id for e in index.filter(EpisodeFilter(max_reward=0.0, finish_reason="submitted"))] == [2]
    assert EpisodeFilter.from_query({"step": "2", "min_reward": ""}) == EpisodeFilter(step=2)
    with pytest.raises(ValueError, match="step='two' is not an integer"):
        EpisodeFilter.from_query({"step": "two"})
    with pytest.raises(ValueError, match="unknown filter colour"):
        EpisodeFilter.from_query({"colour": "red"})


def test_a_dir_without_episodes_is_a_clear_error(tmp_path: Path, capsys) -> None:
    from agent_rl.cli import main

    with pytest.raises(NoEpisodesError, match="no episode files"):
        RunIndex.open(tmp_path)
    (tmp_path / "rollouts").mkdir()
    (tmp_path / "rollouts" / "step-000001.jsonl").write_text("not json\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(NoEpisodesError, match="2 malformed line"):
        RunIndex.open(tmp_path)
    assert main(["view", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_rollout_and_eval_dirs(tmp_path: Path, run_dir: Path) -> None:
    """`agent-rl rollout`'s trajectories.jsonl (tokenizer from summary.json) and `agent-rl eval`'s
    results.jsonl (no tokens: episodes with grade, patch and timings), found at any depth."""
    from agent_rl.eval.evaluate import result_row
    from agent_rl.view.episode import episode_detail
    from agent_rl.view.tokens import run_tokenizer_spec

    rollout = tmp_path / "pipeline" / "rollout"
    rollout.mkdir(parents=True)
    shutil.copy(run_dir / "rollouts" / "step-000001.jsonl", rollout / "trajectories.jsonl")
    (rollout / "summary.json").write_text(json.dumps({"model": "smollm2-135m", "episodes": 2}), encoding="utf-8")
    evaluation = tmp_path / "pipeline" / "eval-base"
    evaluation.mkdir()
    row = result_row(task="calc__add-1", sample=3, seed=0, resolved=True, reward=1.0, turns=4,
                     finish_reason="submitted", patch="+fix\n", timing={"total_s": 9.5}, grade={"resolved": True})
    (evaluation / "results.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")

    index = RunIndex.open(tmp_path / "pipeline")
    assert [(e.source, e.kind) for e in index.episodes] == [("eval-base/results.jsonl", "result")] + [
        ("rollout/trajectories.jsonl", "trajectory")] * 2
    assert run_tokenizer_spec(rollout) == "smollm2-135m"
    result = episode_detail(index, 0, LazyTokenizer(None))
    assert (result["summary"]["reward"], result["summary"]["resolved"], result["summary"]["group_index"]) == (1.0, True, 3)
    assert result["turns"] == [] and result["tokens"] is None and result["patch"] == "+fix\n"
    assert result["timings"] == {"total_s": 9.5}


def test_split_reply_finds_the_action() -> None:
    assert split_reply("Look.\n\n```bash\nls -la\n```") == ("Look.", "```bash\nls -la\n```")
    assert split_reply('Hm <tool_call>{"name": "submit"}</tool_call>') == ("Hm", '{"name": "submit"}')
    assert split_reply('{"name": "submit"}') == ("", '{"name": "submit"}')
    assert split_reply("All done <submit/>") == ("All done", "<submit/>")
    assert split_reply("just thinking") == ("just thinking", "")
    assert split_reply("Before.\n```bash\nls\n```\nAfter.") == ("Before.\n\nAfter.", "```bash\nls\n```")


def test_split_reply_agrees_with_the_env_parser() -> None:
    # A block the env ignores (```python while reasoning) is thought; the action is the block it runs.
    reply = "Maybe:\n```python\nreturn a + b\n```\nCheck first.\n```bash\ncat calc.py\n```"
    assert split_reply(reply) == ("Maybe:\n```python\nreturn a + b\n```\nCheck first.", "```bash\ncat calc.py\n```")
    # Only a non-action block: no action, as the env says (a format error).
    assert split_reply("```python\nx = 1\n```") == ("```python\nx = 1\n```", "")
    # An unclosed action block runs to the end, as the env reads it.
    assert split_reply("Go.\n```bash\nls") == ("Go.", "```bash\nls")
    # Two action blocks (the env refuses the reply): both are the action, nothing of them thought.
    assert split_reply("```bash\nls\n```\nthen\n```submit\n```") == ("then", "```bash\nls\n```\n\n```submit\n```")


def test_turn_timings_pair_with_the_replies() -> None:
    record = {"turn_timings": [{"generation_s": 1.0, "env_s": 0.5, "total_s": 1.6}, {"generation_s": 2, "env_s": "x"}]}
    assert turn_timings(record, 2) == [{"generation_s": 1.0, "env_s": 0.5, "total_s": 1.6}, {"generation_s": 2.0}]
    assert turn_timings(record, 3) is None  # not one per reply: not shown rather than shown against the wrong turn
    assert turn_timings({}, 2) is None and turn_timings({"turn_timings": []}, 0) is None  # an older file


def test_episode_detail_has_turns_and_tokens(run_dir: Path, smol_tokenizer) -> None:
    from agent_rl.view.episode import episode_detail

    index = RunIndex.open(run_dir)
    detail = episode_detail(index, 0, LazyTokenizer("smollm2-135m", loader=lambda spec: smol_tokenizer))
    turns = detail["turns"]
    assert [t["action_kind"] for t in turns] == ["bash", "edit", "submit"]
    assert turns[0]["thought"] == "Let me look at calc.py first."
    assert turns[0]["action"] == "```bash\ncat calc.py\n```"
    assert turns[0]["observations"][0]["content"].startswith("def add(a, b):")
    assert turns[2]["observations"] == []
    assert [t["timings"] for t in turns] == [
        {"generation_s": 1.5 + i, "env_s": 0.25, "total_s": 1.8 + i} for i in range(3)
    ]
    assert [m["role"] for m in detail["prompt"]] == ["system", "user"]
    tokens = detail["tokens"]
    assert sum(t["sampled_tokens"] for t in turns) == sum(1 for m in tokens["mask"] if m == 1)
    start = turns[0]["token_start"]
    assert "".join(tokens["text"][start:start + 4]).startswith("Let me")
    assert tokens["mask"][:tokens["prompt_len"]] == [-1] * tokens["prompt_len"]
    assert detail["grade"]["resolved"] is True and "+    return a + b" in detail["patch"]
    assert detail["meta"]["versions"] == [0]
    json_turn = episode_detail(index, 2, LazyTokenizer(None))["turns"][0]
    assert (json_turn["action_kind"], json_turn["thought"]) == ("view", "Check the helper.")
    assert "timings" not in json_turn  # a record without per-turn timings


def test_tokenizer_that_cannot_load_falls_back_to_ids(run_dir: Path) -> None:
    from agent_rl.view.episode import episode_detail

    def broken(spec: str):
        raise OSError(f"{spec}: not on this machine")

    detail = episode_detail(RunIndex.open(run_dir), 1, LazyTokenizer("org/huge-model", loader=broken))
    assert detail["tokens"]["text"] is None and len(detail["tokens"]["ids"]) > 0
    assert "could not be loaded" in detail["tokens_note"] and "huge-model" in detail["tokens_note"]


async def test_api(run_dir: Path, smol_tokenizer) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from agent_rl.view.server import build_app

    app = build_app(RunIndex.open(run_dir), LazyTokenizer("smollm2-135m", loader=lambda spec: smol_tokenizer))
    async with TestClient(TestServer(app)) as client:
        run = await (await client.get("/api/run")).json()
        assert run["episodes"] == 4 and run["skipped_total"] == 1 and run["facets"]["steps"] == [1, 2]
        body = await (await client.get("/api/episodes", params={"step": "1", "min_reward": "1"})).json()
        assert [e["id"] for e in body["episodes"]] == [0] and body["total"] == 4
        bad = await client.get("/api/episodes", params={"min_reward": "high"})
        assert bad.status == 400 and "min_reward" in (await bad.json())["error"]
        episode = await (await client.get("/api/episode/0")).json()
        assert len(episode["turns"]) == 3
        grade = await client.get("/api/episode/0/grade")
        assert (await grade.json())["tests_status"]["FAIL_TO_PASS"]["success"] == ["tests/test_calc.py::test_add"]
        patch = await client.get("/api/episode/0/patch")
        assert "+    return a + b" in await patch.text()
        missing = await client.get("/api/episode/99")
        assert missing.status == 404 and "no episode 99" in (await missing.json())["error"]
        page = await client.get("/")
        assert page.status == 200 and "<script>" in await page.text()


# ------------------------------------------------------------------ the page in headless Chromium

def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    why = "no Chromium on PATH (Debian: apt-get install --no-install-recommends chromium; scripts/setup.sh does)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"CI=true and {why}; the browser tests must run")
    pytest.skip(why)


@pytest.fixture(scope="module")
def chromium() -> str:
    return _chromium()


def dump_dom(chromium: str, url: str, profile: Path) -> str:
    """The DOM after the page's script ran: virtual time lets timers and fetches settle first."""
    argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
            f"--user-data-dir={profile}", "--virtual-time-budget=15000", "--dump-dom", url]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'data-ready="1"' in proc.stdout, f"the page never finished rendering:\n{proc.stdout[-3000:]}"
    return proc.stdout


def rows(dom: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="episode[^"]*" data-id="(\d+)"', dom)]


def check_episode_zero(dom: str) -> None:
    """Episode 0 is open: its three turns with thought, action and observation, and a token strip
    whose spans carry the loss mask, logprobs and SmolLM2's token text."""
    assert 'data-episode="0"' in dom
    assert re.findall(r'<article class="turn" data-turn="(\d)"', dom) == ["1", "2", "3"]
    for text in ("Let me look at calc.py first.", "```bash\ncat calc.py\n```", "def add(a, b):\n    return a - b",
                 "The operator is wrong; add must use +.", "Edited calc.py: 1 replacement.", "```submit\n```"):
        assert html.escape(text, quote=False) in dom, text
    sampled = re.findall(r'<span id="tok-\d+" class="tok sampled" data-lp="(-?[\d.]+)"', dom)
    assert len(sampled) > 20 and any(float(lp) <= -6 for lp in sampled)
    assert '<div id="tokens" class="strip by-mask">' in dom
    assert re.search(r'class="tok prompt"[^>]*>&lt;\|im_start\|&gt;</span>', dom)
    assert re.search(r'class="tok env"', dom) and re.search(r'class="tok sampled"[^>]*>Let</span>', dom)
    assert "tests/test_calc.py::test_add" in dom and "+    return a + b" in dom
    assert 'class="grade-link"' in dom and 'class="patch-link"' in dom
    assert '<span class="timings"> · 1.80 s (generation 1.50 s, env 0.25 s)</span>' in dom


@pytest.fixture(scope="module")
def live_url(run_dir: Path):
    """`agent-rl view RUN_DIR --port 0` in its own process; yields the page's URL."""
    proc = subprocess.Popen([sys.executable, "-m", "agent_rl.cli", "view", str(run_dir), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        assert match, f"no URL from agent-rl view: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        url = match.group(1)
        # Load the tokenizer before the browser asks, so its first request does not wait for it.
        with urllib.request.urlopen(url + "api/episode/0", timeout=300) as resp:
            assert resp.status == 200
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_browser_live_page_lists_filters_and_opens_an_episode(chromium: str, live_url: str, tmp_path: Path) -> None:
    started = time.monotonic()
    dom = dump_dom(chromium, live_url, tmp_path / "profile")
    assert rows(dom) == [0, 1, 2, 3]
    assert "4 episodes in 2 file(s)" in dom and "1 malformed line(s) skipped" in dom
    assert "Pick an episode from the list." in dom

    filtered = dump_dom(chromium, live_url + "#finish_reason=submitted&max_reward=0.5", tmp_path / "profile")
    assert rows(filtered) == [2]

    opened = dump_dom(chromium, live_url + "#step=1&episode=0", tmp_path / "profile")
    assert rows(opened) == [0, 1]
    assert re.search(r'<tr class="episode resolved selected" data-id="0"', opened)
    check_episode_zero(opened)
    print(f"three page loads in {time.monotonic() - started:.1f} s")


@pytest.mark.slow
def test_browser_static_page(chromium: str, run_dir: Path, tmp_path: Path) -> None:
    from agent_rl.cli import main

    out = tmp_path / "view.html"
    assert main(["view", str(run_dir), "--static", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "http://" not in page.replace("http-equiv", "") and "https://" not in page  # nothing remote
    dom = dump_dom(chromium, out.as_uri() + "#episode=0", tmp_path / "profile")
    assert rows(dom) == [0, 1, 2, 3]
    check_episode_zero(dom)
    error_episode = dump_dom(chromium, out.as_uri() + "#episode=3", tmp_path / "profile")
    assert "SandboxDied: container exited during reset" in error_episode


class DevTools:
    """One headless Chromium page driven over the DevTools protocol (aiohttp's websocket client):
    for what a URL cannot do, clicking a row, a toggle, a filter form."""

    def __init__(self, proc: subprocess.Popen, session, ws) -> None:
        self.proc, self.session, self.ws = proc, session, ws
        self.next_id = 0
        self.page_session: str | None = None

    @classmethod
    async def launch(cls, chromium: str, profile: Path) -> "DevTools":
        import aiohttp

        log = profile.with_suffix(".log")
        proc = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                 f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=log.open("w"))
        deadline = time.monotonic() + 60
        while not (match := re.search(r"DevTools listening on (ws://\S+)", log.read_text(errors="replace"))):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"Chromium gave no DevTools endpoint:\n{log.read_text(errors='replace')[-2000:]}")
            await asyncio.sleep(0.1)
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(match.group(1), max_msg_size=0)
        return cls(proc, session, ws)

    async def send(self, method: str, params: dict | None = None, *, page: bool = True) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if page and self.page_session:
            message["sessionId"] = self.page_session
        await self.ws.send_json(message)
        while True:  # events (no id) and other replies are not ours
            reply = await self.ws.receive_json(timeout=60)
            if reply.get("id") == self.next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply["result"]

    async def open(self, url: str) -> None:
        target = await self.send("Target.createTarget", {"url": url}, page=False)
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}, page=False)
        self.page_session = attached["sessionId"]

    async def js(self, expression: str):
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": True})
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 30.0):
        deadline = time.monotonic() + timeout_s
        while not (value := await self.js(expression)):
            assert time.monotonic() < deadline, f"timed out waiting for {expression}"
            await asyncio.sleep(0.1)
        return value

    async def close(self) -> None:
        await self.ws.close()
        await self.session.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.mark.slow
async def test_browser_click_episode_toggle_colours_and_filter(chromium: str, live_url: str, tmp_path: Path) -> None:
    browser = await DevTools.launch(chromium, tmp_path / "profile")
    try:
        await browser.open(live_url)
        await browser.wait_for("document.querySelectorAll('tr.episode').length === 4")

        await browser.js("document.querySelector('tr.episode[data-id=\"2\"]').click()")
        await browser.wait_for("document.getElementById('episode').dataset.episode === '2'")
        assert "episode=2" in await browser.js("location.hash")
        turns = await browser.js("""[...document.querySelectorAll('article.turn')].map(t => ({
            kind: t.querySelector('.kind').textContent, thought: t.querySelector('.thought pre').textContent,
            action: t.querySelector('.action pre').textContent,
            observations: [...t.querySelectorAll('.observation pre')].map(o => o.textContent)}))""")
        assert [t["kind"] for t in turns] == ["view", "submit"]
        assert turns[0]["thought"] == "Check the helper."
        assert turns[0]["action"] == '{"name": "view", "arguments": {"path": "strings.py"}}'
        assert "return s.lower()" in turns[0]["observations"][0] and turns[1]["observations"] == []

        # The strip colours sampled tokens alike by loss mask, and apart by logprob after the toggle.
        backgrounds = """(() => {
            const bg = sel => getComputedStyle(document.querySelector(sel)).backgroundColor;
            return [bg('.tok.sampled[data-lp="-6.5"]'), bg('.tok.sampled[data-lp="0"]'), bg('.tok.env')]; })()"""
        low, high, env = await browser.js(backgrounds)
        assert low == high != env
        await browser.js("document.querySelector('button[data-mode=\"by-lp\"]').click()")
        assert await browser.js("document.getElementById('tokens').className") == "strip by-lp"
        low, high, _ = await browser.js(backgrounds)
        assert low != high

        await browser.js("""(() => { const s = document.getElementById('f-finish_reason');
            s.value = 'max_turns'; s.dispatchEvent(new Event('change', {bubbles: true})); })()""")
        await browser.wait_for("document.querySelectorAll('tr.episode').length === 1")
        assert await browser.js("document.querySelector('tr.episode').dataset.id") == "1"
        assert "finish_reason=max_turns" in await browser.js("location.hash")
    finally:
        await browser.close()
