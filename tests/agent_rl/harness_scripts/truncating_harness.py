"""A scripted outside harness for the gateway tests, run as `rollout.harness`.

It speaks only OpenAI (the official client) to the session's base URL and runs commands only
through the session's /exec. Three model calls: the second extends the first, the third comes
after it dropped the middle of its history (a summarising harness), so the session splits
once. It then runs `id -u` and `pwd` in the sandbox and prints what they said. The first
episode to claim the file named by WINNER_FLAG applies the gold patch named by GOLD_PATCH
through /exec, so a group of two has exactly one winner: a real advantage signal.
"""
from __future__ import annotations

import argparse
import json
import os
import urllib.request
from pathlib import Path

import openai


def run(exec_url: str, command: str) -> dict:
    request = urllib.request.Request(exec_url, data=json.dumps({"command": command, "timeout": 30}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=90) as response:
        return json.loads(response.read())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--exec-url", required=True)
    parser.add_argument("--task-file", required=True)
    args = parser.parse_args()
    task = json.loads(Path(args.task_file).read_text())
    client = openai.OpenAI(base_url=args.base_url, api_key="session", max_retries=0)
    system = {"role": "system", "content": "You fix bugs. Reply briefly."}
    messages = [system, {"role": "user", "content": task["problem_statement"][:400]}]
    first = client.chat.completions.create(model="any", messages=messages)
    messages += [first.choices[0].message.model_dump(exclude_none=True), {"role": "user", "content": "Go on."}]
    client.chat.completions.create(model="any", messages=messages)
    summary = [system, {"role": "user", "content": "Summary: nothing changed yet. " + task["problem_statement"][:200]}]
    client.chat.completions.create(model="any", messages=summary)

    print("sandbox:", json.dumps(run(args.exec_url, "id -u && pwd")), flush=True)
    try:
        os.close(os.open(os.environ["WINNER_FLAG"], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        print("loser", flush=True)
        return
    patch = Path(os.environ["GOLD_PATCH"]).read_text()
    result = run(args.exec_url, f"git apply <<'AGENT_RL_PATCH_EOF'\n{patch}\nAGENT_RL_PATCH_EOF")
    print("winner:", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
