"""An OpenAI-compatible gateway that records the exact tokens of any agent harness.

A harness (mini-swe-agent, OpenHands, an in-house scaffold) talks to `/s/<session>/v1` as it
would to any OpenAI server; the gateway renders the chat template, samples from one of our
engines with the trainer's settings and records, per session, the prompt ids, the sampled
ids and their logprobs. `recording.py` turns a session into token-exact trajectories;
`/s/<session>/exec` runs a command in the session's hardened sandbox, so a harness needs no
Docker of its own (agent_rl/harnesses/ adapts mini-swe-agent to it).

Modules: `errors` (OpenAI-style errors), `recording` (calls -> segments), `conversation`
(messages -> prompt ids that extend the last call), `tool_calls` (tool-call text formats: hermes, mistral, llama3_json, pythonic),
`sessions` (per-episode state), `app` (the HTTP routes), `server` (`Gateway`: start, stop,
sessions; what `rollout.harness` and `agent-rl gateway` run).
"""
