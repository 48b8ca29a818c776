"""Gateway sessions: one per episode, each with its own recording, chat state and sandbox.

A session is addressed by its id, either in the path (`/s/<id>/v1`, a base URL a harness takes
unchanged) or as the API key (`Authorization: Bearer <id>` on `/v1`). Ids are 128 random bits,
so one session cannot guess another's. Requests of one session are served one at a time (its
lock), so its calls are recorded in the order the conversation grew; sessions never share state,
so a bad request in one leaves every other recording untouched.

A closed session (its episode is over) refuses further calls with 404 but keeps its recording
until the owner takes it (`SessionRegistry.pop`).
"""
from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from agent_rl.gateway.conversation import ChatState
from agent_rl.gateway.errors import UnknownSession
from agent_rl.gateway.recording import Call, SessionSegment, segment_calls
from agent_rl.rollout.trajectory import Trajectory

# (command, timeout_s or None, cwd or None) -> {"output", "returncode", "timed_out"}
Executor = Callable[[str, float | None, str | None], Awaitable[dict[str, Any]]]


@dataclass
class Session:
    id: str
    task_id: str = ""
    executor: Executor | None = None
    created: float = field(default_factory=time.time)
    calls: list[Call] = field(default_factory=list)
    chat: ChatState = field(default_factory=ChatState)
    rejected: int = 0  # requests answered with an error (nothing recorded for them)
    commands: int = 0  # commands run in its sandbox through /exec
    closed: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def record(self, call: Call) -> None:
        self.calls.append(call)

    def segments(self) -> list[SessionSegment]:
        return segment_calls(self.calls)

    def summary(self) -> dict[str, Any]:
        segments = self.segments()
        return {
            "id": self.id, "task_id": self.task_id, "closed": self.closed, "calls": len(self.calls),
            "segments": len(segments), "splits": max(0, len(segments) - 1), "rejected": self.rejected,
            "commands": self.commands, "sampled_tokens": sum(len(c.sampled_ids) for c in self.calls),
        }

    def recording(self) -> dict[str, Any]:
        """The summary, every call and every segment (what `GET /sessions/<id>` returns)."""
        return self.summary() | {"call_log": [c.to_dict() for c in self.calls],
                                 "segment_log": [s.to_dict() for s in self.segments()]}

    def trajectories(self, *, reward: float, grade: dict[str, Any] | None = None, patch: str = "",
                     finish_reason: str = "", terminated: bool = False, truncated: bool = False,
                     group_index: int = 0, timings: dict[str, float] | None = None) -> list[Trajectory]:
        """One trajectory per segment, all with the episode's reward and grade."""
        segments = self.segments()
        messages = [dict(m) for m in self.chat.conv.messages] if self.chat.conv is not None else []
        out = []
        for i, seg in enumerate(segments):
            sampled_versions = [v for v, m in zip(seg.token_versions, seg.loss_mask) if m]
            out.append(Trajectory(
                task_id=self.task_id, prompt_ids=list(seg.prompt_ids), response_ids=list(seg.response_ids),
                loss_mask=list(seg.loss_mask), behaviour_logprobs=list(seg.logprobs), reward=float(reward),
                num_turns=seg.calls, finish_reason=finish_reason, terminated=terminated, truncated=truncated,
                policy_version=min(sampled_versions) if sampled_versions else 0, group_index=group_index,
                # The client-side messages belong to the last segment (the conversation as it ended).
                messages=messages if i == len(segments) - 1 else [],
                grade=dict(grade or {}), patch=patch, timings=dict(timings or {}),
                token_versions=list(seg.token_versions), segment=i, segments=len(segments),
            ))
        return out


class SessionRegistry:
    """Every live (and closed, not yet taken) session of one gateway."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    def create(self, task_id: str = "", executor: Executor | None = None) -> Session:
        session = Session(id=secrets.token_hex(16), task_id=task_id, executor=executor)
        self._sessions[session.id] = session
        return session

    def get(self, session_id: str) -> Session:
        """The session, or UnknownSession; a closed one is returned (callers check `closed`)."""
        session = self._sessions.get(session_id)
        if session is None:
            raise UnknownSession(f"no gateway session {session_id[:64]!r}: create one with POST /sessions, "
                                 "or use the base URL your episode was given")
        return session

    def live(self, session_id: str) -> Session:
        session = self.get(session_id)
        if session.closed:
            raise UnknownSession(f"gateway session {session_id} is closed: its episode is over")
        return session

    def close(self, session_id: str) -> Session:
        session = self.get(session_id)
        session.closed = True
        return session

    def pop(self, session_id: str) -> Session:
        session = self.close(session_id)
        del self._sessions[session_id]
        return session

    def discard(self, session_id: str) -> Session | None:
        """`pop` if the session is still here (closed first); None if it was already taken."""
        return self.pop(session_id) if session_id in self._sessions else None

    def __len__(self) -> int:
        return len(self._sessions)

    def all(self) -> list[Session]:
        return list(self._sessions.values())
