"""Planning vs execution tokens of an agent's replies (the two-phase dynamics of issue 16).

A reply is *execution* where it is the action the environment runs and *planning* everywhere
else (the reasoning around it). What counts as the action follows `envs.actions` exactly:

* ``fenced``: every fenced block whose tag is an action tag (```bash, ```view PATH, ```create,
  ```edit, ```submit, ...), from its opening fence line through its closing fence line; a
  block left unclosed runs to the end of the reply (the env reads it as a failed action, but
  the tokens were the model trying to act). A ``<submit/>`` tag is execution too. Blocks with
  other tags (```python shown while reasoning) are planning, as the env ignores them.
* ``json``: every ``<tool_call>...</tool_call>`` including the tags (an unclosed one runs to
  the end); with no tag at all, a reply that is a bare JSON object (optionally in a ```json
  fence) is execution as a whole, because that is what the env parses.

Tokens are mapped to characters by decoding them in short overlapping windows (`token_pieces`):
each token's piece is the text its decoding adds after its few predecessors. The spans are
then found in the *joined pieces*, so token and character positions agree by construction
even where a multi-byte character is split over tokens (the join may then hold a replacement
character, which never touches the ASCII fences and tags the spans are made of).

Special tokens (end of turn, ...) are turn structure, neither planning nor execution (code 0).
Codes: 0 = not a sampled reply token, 1 = planning, 2 = execution.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import torch

from envs.actions import fenced_action_spans

NONE, PLANNING, EXECUTION = 0, 1, 2
PHASE_NAMES = {PLANNING: "planning", EXECUTION: "execution"}

_TOOL_CALL = re.compile(r"<tool_call>.*?</tool_call>", re.DOTALL)
_JSON_FENCE = re.compile(r"```(?:json)?[ \t]*\n(.*)\n```", re.DOTALL)

# Context tokens decoded before each token: enough for SentencePiece's leading-space rule and
# for a UTF-8 character split over up to four byte tokens.
DECODE_WINDOW = 4

Span = tuple[int, int]  # [start, end) character offsets


def execution_spans(text: str, fmt: str) -> list[Span]:
    """Character spans of `text` that are the action(s), for action format `fmt`."""
    if fmt == "fenced":
        return fenced_action_spans(text)  # the env's own reading of the reply
    if fmt == "json":
        return _json_spans(text)
    raise ValueError(f"unknown action format {fmt!r}; expected 'fenced' or 'json'")


def _json_spans(text: str) -> list[Span]:
    spans = [(m.start(), m.end()) for m in _TOOL_CALL.finditer(text)]
    last_end = spans[-1][1] if spans else 0
    dangling = text.find("<tool_call>", last_end)
    if dangling >= 0:
        spans.append((dangling, len(text)))
    if spans:
        return spans
    stripped = text.strip()
    fenced = _JSON_FENCE.fullmatch(stripped)
    body = fenced.group(1).strip() if fenced else stripped
    if body.startswith("{"):
        start = len(text) - len(text.lstrip())
        return [(start, start + len(stripped))]
    return []


# --------------------------------------------------------------------------------------
# tokens → characters → phases
# --------------------------------------------------------------------------------------

BatchDecode = Callable[[list[list[int]]], list[str]]


def tokenizer_decoder(tokenizer: Any) -> BatchDecode:
    """A batch decoder that keeps every character (special tokens, spacing) as generated."""

    def decode(sequences: list[list[int]]) -> list[str]:
        return tokenizer.batch_decode(sequences, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    return decode


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def token_pieces(ids: Sequence[int], decode: BatchDecode, window: int = DECODE_WINDOW) -> list[str]:
    """The text each token adds to the reply (two batched decodes, not one per prefix).

    piece_i = decode(ids[i-w : i+1]) minus decode(ids[i-w : i]). When the shorter decoding is
    not a prefix of the longer (it ended in half a character), the piece is what follows
    their common prefix."""
    ids = list(ids)
    if not ids:
        return []
    before = [ids[max(0, i - window): i] for i in range(len(ids))]
    upto = [ids[max(0, i - window): i + 1] for i in range(len(ids))]
    texts = decode(before + upto)
    pieces = []
    for prev, cur in zip(texts[: len(ids)], texts[len(ids):]):
        pieces.append(cur[len(prev):] if cur.startswith(prev) else cur[_common_prefix(prev, cur):])
    return pieces


def token_phases(pieces: Sequence[str], spans: Sequence[Span], special: Sequence[bool] | None = None) -> list[int]:
    """Phase code per token: EXECUTION if its characters touch an execution span, else PLANNING.

    A token that adds no characters (the first bytes of a split character) takes the phase of
    the next token that does; special tokens are NONE."""
    phases: list[int] = []
    pos = 0
    pending: list[int] = []  # empty-piece tokens waiting for the next character
    for i, piece in enumerate(pieces):
        if special is not None and special[i]:
            phases.append(NONE)
            pos += len(piece)
            continue
        if not piece:
            phases.append(PLANNING)
            pending.append(i)
            continue
        start, end = pos, pos + len(piece)
        phase = EXECUTION if any(s < end and start < e for s, e in spans) else PLANNING
        phases.append(phase)
        for j in pending:
            phases[j] = phase
        pending.clear()
        pos = end
    return phases


@dataclass(frozen=True)
class ReplySplitter:
    """Splits sampled replies into phases with one tokenizer and action format."""

    decode: BatchDecode
    fmt: str
    special_ids: frozenset[int] = frozenset()

    @classmethod
    def for_tokenizer(cls, tokenizer: Any, fmt: str) -> "ReplySplitter":
        execution_spans("", fmt)  # reject an unknown format now, not at the first reply
        return cls(tokenizer_decoder(tokenizer), fmt, frozenset(getattr(tokenizer, "all_special_ids", ()) or ()))

    def reply(self, ids: Sequence[int]) -> list[int]:
        """Phase code per token of one reply."""
        pieces = token_pieces(ids, self.decode)
        spans = execution_spans("".join(pieces), self.fmt)
        return token_phases(pieces, spans, [t in self.special_ids for t in ids])

    def response(self, response_ids: Sequence[int], loss_mask: Sequence[int]) -> list[int]:
        """Phase code per token of a trajectory's response: each maximal run of sampled tokens
        (mask 1) is one reply; environment and template tokens (mask 0) are NONE."""
        if len(response_ids) != len(loss_mask):
            raise ValueError(f"response_ids ({len(response_ids)}) and loss_mask ({len(loss_mask)}) differ in length")
        out = [NONE] * len(response_ids)
        for start, end in sampled_runs(loss_mask):
            out[start:end] = self.reply(response_ids[start:end])
        return out


def sampled_runs(loss_mask: Sequence[int]) -> list[Span]:
    """[start, end) of each maximal run of 1s."""
    runs: list[Span] = []
    start = None
    for i, m in enumerate(list(loss_mask) + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            runs.append((start, i))
            start = None
    return runs


def batch_phase_mask(trajectories: Iterable[Any], width: int, splitter: ReplySplitter) -> torch.Tensor:
    """[N, width] phase codes aligned with a TrainBatch's `input_ids` (prompt first, then the
    response), for trajectories with `prompt_ids`, `response_ids` and `loss_mask`."""
    rows = list(trajectories)
    mask = torch.zeros((len(rows), width), dtype=torch.int8)
    for row, traj in enumerate(rows):
        p, r = len(traj.prompt_ids), len(traj.response_ids)
        if p + r > width:
            raise ValueError(f"row {row} has {p + r} tokens, more than the batch width {width}")
        mask[row, p: p + r] = torch.tensor(splitter.response(traj.response_ids, traj.loss_mask), dtype=torch.int8)
    return mask


# --------------------------------------------------------------------------------------
# per-phase sums of per-token numbers
# --------------------------------------------------------------------------------------

PHASE_SUM_KEYS = ("planning_tokens", "execution_tokens", "planning_entropy", "execution_entropy",
                  "planning_logprob", "execution_logprob")


def phase_sums(entropy: torch.Tensor, logprobs: torch.Tensor, score_mask: torch.Tensor,
               phase_mask: torch.Tensor) -> dict[str, float]:
    """Σ entropy, Σ logprob and token counts over scored tokens of each phase (all [B, T]);
    sums, not means, so micro-batches and ranks add up before one division at the end."""
    if not (entropy.shape == logprobs.shape == score_mask.shape == phase_mask.shape):
        raise ValueError(f"shapes differ: entropy {tuple(entropy.shape)}, logprobs {tuple(logprobs.shape)}, "
                         f"score_mask {tuple(score_mask.shape)}, phase_mask {tuple(phase_mask.shape)}")
    scored = score_mask.detach().float()
    out: dict[str, float] = {}
    for code, name in PHASE_NAMES.items():
        weight = scored * (phase_mask == code).to(scored.device, scored.dtype)
        out[f"{name}_tokens"] = float(weight.sum().item())
        out[f"{name}_entropy"] = float((entropy.detach().float() * weight).sum().item())
        out[f"{name}_logprob"] = float((logprobs.detach().float() * weight).sum().item())
    return out


def phase_means(sums: dict[str, float]) -> dict[str, float | None]:
    """Per-token means from `phase_sums` (summed over micro-batches); None for an empty phase."""
    out: dict[str, float | None] = {}
    for name in PHASE_NAMES.values():
        n = sums.get(f"{name}_tokens", 0.0)
        out[f"{name}_entropy"] = sums[f"{name}_entropy"] / n if n else None
        out[f"{name}_logprob"] = sums[f"{name}_logprob"] / n if n else None
    return out
