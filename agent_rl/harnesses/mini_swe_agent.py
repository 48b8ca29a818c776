"""mini-swe-agent, unchanged, trained through the gateway and run in our sandbox.

Two seams, the pattern for any harness:

- the model: mini-swe-agent's own LiteLLM model class pointed at the gateway session's base
  URL (`openai/<name>`, `api_base`); the gateway records every token;
- the environment: `GatewayEnvironment`, mini-swe-agent's `Environment` protocol (`execute`,
  `get_template_vars`, `serialize`) over the session's `/exec` endpoint, so its commands run in
  the episode's hardened workspace (no network, not root, capabilities dropped, limits). The
  harness process needs no Docker access and never sees the hidden tests; the grader takes the
  workspace's diff when the harness exits, whatever the harness says it submitted.

Run it as `rollout.harness` (the placeholders are filled per episode):

    {python} -m agent_rl.harnesses.mini_swe_agent --base-url {base_url} --exec-url {exec_url}
        --task-file {task_file} --model {model}

The environment class only needs the standard library, so a harness installed elsewhere can
copy it. mini-swe-agent itself is imported lazily: the class must be importable by a
mini-swe-agent config (`environment_class: agent_rl.harnesses.mini_swe_agent.GatewayEnvironment`).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

SUBMIT_MARKER = "COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT"  # mini-swe-agent's own end-of-task signal


class GatewayEnvironment:
    """mini-swe-agent's Environment protocol, executing through a gateway session's `/exec`."""

    def __init__(self, *, exec_url: str, cwd: str = "", timeout: int = 60, env: dict[str, str] | None = None,
                 logger: logging.Logger | None = None, **_: Any) -> None:
        self.config = {"exec_url": exec_url, "cwd": cwd, "timeout": timeout, "env": dict(env or {})}
        self.logger = logger or logging.getLogger("agent_rl.harnesses.mini_swe_agent")

    def execute(self, action: dict, cwd: str = "", *, timeout: int | None = None) -> dict[str, Any]:
        command = action.get("command", "") if isinstance(action, dict) else str(action)
        exports = "".join(f"export {k}={_quote(v)}; " for k, v in self.config["env"].items())
        body = {"command": exports + command, "timeout": timeout or self.config["timeout"]}
        if cwd or self.config["cwd"]:
            body["cwd"] = cwd or self.config["cwd"]
        output = self._post(body)
        self._check_finished(output)
        return output

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(self.config["exec_url"], data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=float(body["timeout"]) + 60) as response:
                result = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            message = _error_message(exc)
            return {"output": "", "returncode": -1, "exception_info": f"the sandbox refused the command: {message}"}
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return {"output": "", "returncode": -1, "exception_info": f"the sandbox is unreachable: {exc}"}
        info = f"the command timed out after {body['timeout']}s and was killed" if result.get("timed_out") else ""
        return {"output": result.get("output", ""), "returncode": result.get("returncode", -1), "exception_info": info}

    def _check_finished(self, output: dict[str, Any]) -> None:
        """mini-swe-agent's submit signal: the marker as the first output line, exit code 0."""
        lines = output.get("output", "").lstrip().splitlines(keepends=True)
        if lines and lines[0].strip() == SUBMIT_MARKER and output.get("returncode") == 0:
            from minisweagent.exceptions import Submitted

            submission = "".join(lines[1:])
            raise Submitted({"role": "exit", "content": submission,
                             "extra": {"exit_status": "Submitted", "submission": submission}})

    def get_template_vars(self, **kwargs: Any) -> dict[str, Any]:
        return {**self.config, **platform.uname()._asdict(), **kwargs}

    def serialize(self) -> dict[str, Any]:
        return {"info": {"config": {"environment": dict(self.config),
                                    "environment_type": f"{__name__}.{type(self).__name__}"}}}


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "'\"'\"'") + "'"


def _error_message(exc: urllib.error.HTTPError) -> str:
    try:
        return json.loads(exc.read())["error"]["message"]
    except Exception:
        return f"HTTP {exc.code}"


def _load_config(path: str | None) -> dict[str, Any]:
    import yaml
    from minisweagent.config import builtin_config_dir

    source = Path(path) if path else Path(builtin_config_dir) / "mini_textbased.yaml"
    return yaml.safe_load(source.read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agent_rl.harnesses.mini_swe_agent",
                                     description="Run mini-swe-agent on one task through an agent-rl gateway session.")
    parser.add_argument("--base-url", required=True, help="the session's OpenAI base URL ({base_url})")
    parser.add_argument("--exec-url", required=True, help="the session's /exec URL ({exec_url})")
    parser.add_argument("--task-file", required=True, help="JSON with problem_statement and workdir ({task_file})")
    parser.add_argument("--model", default="agent-rl", help="served model name ({model})")
    parser.add_argument("--config", default=None,
                        help="a mini-swe-agent YAML config (default: its own mini_textbased.yaml)")
    parser.add_argument("--step-limit", type=int, default=None, help="override agent.step_limit")
    parser.add_argument("--tool-calls", action="store_true",
                        help="use mini-swe-agent's tool-calling model class instead of the text-based one")
    parser.add_argument("--output", default=None, help="write mini-swe-agent's trajectory JSON here")
    args = parser.parse_args(argv)

    # mini-swe-agent prints a banner and reads ~/.config at import; keep both out of the episode.
    os.environ.setdefault("MSWEA_SILENT_STARTUP", "1")
    os.environ.setdefault("MSWEA_COST_TRACKING", "ignore_errors")
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no internet lookups

    from minisweagent.agents.default import DefaultAgent
    from minisweagent.models.litellm_model import LitellmModel
    from minisweagent.models.litellm_textbased_model import LitellmTextbasedModel

    task = json.loads(Path(args.task_file).read_text(encoding="utf-8"))
    config = _load_config(args.config)
    agent_config = dict(config.get("agent") or {})
    agent_config.pop("mode", None)  # the interactive agent's setting; DefaultAgent never asks a human
    if args.step_limit is not None:
        agent_config["step_limit"] = args.step_limit
    if args.output:
        agent_config["output_path"] = Path(args.output)
    model_config = dict(config.get("model") or {})
    model_config.pop("model_class", None)
    model_config.pop("model_name", None)
    model_kwargs = dict(model_config.pop("model_kwargs", None) or {})
    model_kwargs.update({"api_base": args.base_url, "api_key": "agent-rl-session"})
    model_class = LitellmModel if args.tool_calls else LitellmTextbasedModel
    model = model_class(model_name=f"openai/{args.model}", model_kwargs=model_kwargs,
                        cost_tracking="ignore_errors", **model_config)
    env_config = dict(config.get("environment") or {})
    env = GatewayEnvironment(exec_url=args.exec_url, cwd=task.get("workdir") or "", env=env_config.get("env"),
                             timeout=int(env_config.get("timeout", 60)))
    agent = DefaultAgent(model, env, **agent_config)
    result = agent.run(task.get("problem_statement", ""))
    print(json.dumps({"exit_status": result.get("exit_status"), "api_calls": agent.n_calls}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
