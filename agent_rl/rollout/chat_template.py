"""Token-exact conversations: the ids the policy saw, built turn by turn.

What this module guarantees
    `prompt_ids + response_ids` is exactly the token sequence the engine was fed and
    produced. The ids the engine sampled are appended verbatim (loss_mask 1, behaviour
    logprobs from the engine); the model's own tokens are never decoded and re-encoded.
    Everything else the chat template contributes (end-of-turn tokens the model did not
    sample, e.g. `<|im_end|>` after a generation cut off by max_tokens or the `\\n` after it;
    the next user/tool turn; the next generation prompt) is appended as a *token delta*
    (loss_mask 0, logprob 0.0), computed by rendering the conversation with and without the
    new piece and tokenizing only the suffix.

What it detects (and refuses) instead of guaranteeing
    Template drift: a template whose rendering of earlier turns changes once a later turn
    is added (Qwen3 drops earlier `<think>` blocks), or a tokenizer whose decode of a
    segment does not reproduce the text the template renders. Either raises
    `TemplateDriftError`: at start-up through `probe_template`, or per episode through
    `TokenConversation.verify`, which re-renders the full message list and compares it with
    the ids. A re-render can also differ from the ids for a benign reason: the model sampled a
    non-canonical tokenization (e.g. "he"+"llo" for "hello"), or sampled whitespace that merges
    with the template's preceding newline. The ids are still what the model saw, so
    `verify` reports that (`RenderCheck.sampled_noncanonical`) rather than raising.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Sequence

Message = dict[str, Any]
SegmentKind = Literal["prompt", "sampled", "template"]


class TemplateDriftError(RuntimeError):
    """Re-rendering the conversation through the chat template would not give the ids the model saw."""


class ChatTokenizer(Protocol):
    """The slice of a Hugging Face tokenizer this module needs."""

    all_special_ids: list[int]

    def apply_chat_template(self, conversation: list[Message], **kwargs: Any) -> Any: ...

    def encode(self, text: str, add_special_tokens: bool = ...) -> list[int]: ...

    def decode(self, token_ids: Sequence[int], **kwargs: Any) -> str: ...


def render(tokenizer: ChatTokenizer, messages: list[Message], *, add_generation_prompt: bool,
           **template_kwargs: Any) -> str:
    """The template's text for `messages`; `template_kwargs` go to the template as they are
    (e.g. `tools=[...]` for templates that render tool schemas)."""
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateDriftError(
            f"tokenizer {type(tokenizer).__name__} has no chat_template; set tokenizer.chat_template"
        )
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt, **template_kwargs
    )
    if not isinstance(text, str):
        raise TemplateDriftError(f"apply_chat_template returned {type(text).__name__}, expected text")
    return text


def encode(tokenizer: ChatTokenizer, text: str) -> list[int]:
    # Chat templates write BOS and friends themselves: never let the tokenizer add its own.
    return list(tokenizer.encode(text, add_special_tokens=False))


def decode_exact(tokenizer: ChatTokenizer, ids: Sequence[int]) -> str:
    """Decode keeping special tokens and spacing, so the text renders back to the same ids."""
    return tokenizer.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)


def decode_display(tokenizer: ChatTokenizer, ids: Sequence[int]) -> str:
    """Decode for humans and for stepping the environment (special tokens dropped)."""
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


@dataclass(frozen=True)
class Segment:
    kind: SegmentKind
    start: int  # index into prompt_ids + response_ids
    end: int


@dataclass(frozen=True)
class AssistantTurn:
    content: str  # exact decode of the sampled ids (minus the end-of-turn token), as rendered
    text: str  # display text: what the environment is stepped with
    sampled_ids: list[int]
    closing_ids: list[int]  # template tokens appended after the sampled ids (mask 0)


@dataclass(frozen=True)
class RenderCheck:
    token_exact: bool  # encode(render(messages)) == prompt_ids + response_ids
    sampled_noncanonical: bool  # mismatch only where the model's own tokens are
    mismatch_at: int | None = None
    detail: str = ""


@dataclass
class TokenConversation:
    """A chat whose token ids are exactly what the model saw. Build with `start`."""

    tokenizer: ChatTokenizer
    messages: list[Message]
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    # The template text the current ids correspond to; each new turn must extend it.
    rendered: str = ""
    awaiting_generation: bool = True
    # Passed to every render (e.g. `tools`): a conversation keeps them from start to end.
    template_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls, tokenizer: ChatTokenizer, messages: list[Message],
              template_kwargs: dict[str, Any] | None = None) -> "TokenConversation":
        if not messages:
            raise ValueError("a conversation needs at least one message")
        messages = [dict(m) for m in messages]
        kwargs = dict(template_kwargs or {})
        rendered = render(tokenizer, messages, add_generation_prompt=True, **kwargs)
        prompt_ids = encode(tokenizer, rendered)
        conv = cls(tokenizer=tokenizer, messages=messages, prompt_ids=prompt_ids, rendered=rendered,
                   template_kwargs=kwargs)
        conv.segments.append(Segment("prompt", 0, len(prompt_ids)))
        return conv

    # --- sizes ------------------------------------------------------------------------
    @property
    def ids(self) -> list[int]:
        """What the engine is fed next."""
        return self.prompt_ids + self.response_ids

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.response_ids)

    # --- building ---------------------------------------------------------------------
    def add_generation(self, token_ids: Sequence[int], logprobs: Sequence[float]) -> AssistantTurn:
        """Append the sampled ids verbatim, then the template's closing tokens the model didn't sample."""
        if not self.awaiting_generation:
            raise RuntimeError("add_generation after an assistant turn: add an observation first")
        sampled = list(token_ids)
        if len(logprobs) != len(sampled):
            raise ValueError(f"{len(sampled)} sampled ids but {len(logprobs)} logprobs")

        # First pass assumes nothing was an end-of-turn marker; if the sampled ids end with
        # the first tokens of the template's closing text (e.g. `<|im_end|>`), those belong to
        # the closing, not to the message content, and a second pass renders without them.
        content = decode_exact(self.tokenizer, sampled)
        after, closing = self._close_turn(content)
        overlap = _suffix_prefix_overlap(sampled, closing)
        if overlap:
            content = decode_exact(self.tokenizer, sampled[:-overlap])
            after, closing = self._close_turn(content)
            if closing[:overlap] != sampled[-overlap:]:
                raise TemplateDriftError(
                    "the template's end-of-turn tokens change with the message content; "
                    f"sampled tail {sampled[-overlap:]} vs closing {closing[:overlap]}"
                )
        closing_extra = closing[overlap:]

        self._append("sampled", sampled, [1] * len(sampled), [float(x) for x in logprobs])
        if closing_extra:
            self._append("template", closing_extra, [0] * len(closing_extra), [0.0] * len(closing_extra))
        self.messages.append({"role": "assistant", "content": content})
        self.rendered = after
        self.awaiting_generation = False
        content_ids = sampled[: len(sampled) - overlap]
        return AssistantTurn(
            content=content,
            text=decode_display(self.tokenizer, content_ids),
            sampled_ids=sampled,
            closing_ids=closing_extra,
        )

    def observation_delta(self, content: str, role: str = "user") -> list[int]:
        """The ids `add_observation` would append (new turn + generation prompt), without appending."""
        delta_text, _ = self._observation_text(content, role)
        return encode(self.tokenizer, delta_text)

    def add_observation(self, content: str, role: str = "user") -> list[int]:
        """Append an environment turn as the token delta the template adds for it (mask 0)."""
        if not isinstance(content, str):
            raise TypeError(f"observation must be text, got {type(content).__name__}")
        return self.add_messages([{"role": role, "content": content}])

    def add_messages(self, messages: list[Message]) -> list[int]:
        """Append turns the model did not sample (tool results, a user turn, several at once)
        as the template's token delta for them plus the next generation prompt (mask 0)."""
        if self.awaiting_generation:
            raise RuntimeError("add_messages before the assistant replied")
        if not messages:
            raise ValueError("add_messages needs at least one message")
        delta_text, rendered = self._messages_text(messages)
        delta = encode(self.tokenizer, delta_text)
        self._append("template", delta, [0] * len(delta), [0.0] * len(delta))
        self.messages.extend(dict(m) for m in messages)
        self.rendered = rendered
        self.awaiting_generation = True
        return delta

    # --- checking ---------------------------------------------------------------------
    def verify(self) -> RenderCheck:
        """Re-render `messages` and compare with the ids; raise TemplateDriftError on drift."""
        full = render(self.tokenizer, self.messages, add_generation_prompt=self.awaiting_generation,
                      **self.template_kwargs)
        ours = self.ids
        seen = decode_exact(self.tokenizer, ours)
        if full != seen:
            at = _first_difference(full, seen)
            raise TemplateDriftError(
                "re-rendering the conversation gives different text than the ids the model saw, "
                f"first difference at char {at}: rendered {full[at:at + 40]!r} vs seen {seen[at:at + 40]!r}"
            )
        rerendered = encode(self.tokenizer, full)
        if rerendered == ours:
            return RenderCheck(token_exact=True, sampled_noncanonical=False)
        at = _first_difference(rerendered, ours)
        detail = (
            f"token {at}: re-render has {rerendered[at:at + 5]} "
            f"({decode_exact(self.tokenizer, rerendered[at:at + 5])!r}), trajectory has "
            f"{ours[at:at + 5]} ({decode_exact(self.tokenizer, ours[at:at + 5])!r})"
        )
        if self._touches_sampled(at):
            return RenderCheck(False, True, at, detail)
        raise TemplateDriftError(f"template tokens re-tokenize differently in a full render: {detail}")

    # --- internals --------------------------------------------------------------------
    def _append(self, kind: SegmentKind, ids: list[int], mask: list[int], logprobs: list[float]) -> None:
        start = len(self)
        self.response_ids.extend(ids)
        self.loss_mask.extend(mask)
        self.logprobs.extend(logprobs)
        self.segments.append(Segment(kind, start, start + len(ids)))

    def _close_turn(self, content: str) -> tuple[str, list[int]]:
        """Render with the assistant message added; return (that rendering, ids of the text after the content)."""
        after = render(
            self.tokenizer,
            self.messages + [{"role": "assistant", "content": content}],
            add_generation_prompt=False,
            **self.template_kwargs,
        )
        expected_head = self.rendered + content
        if not after.startswith(expected_head):
            at = _first_difference(after, expected_head)
            raise TemplateDriftError(
                "adding an assistant turn does not extend the rendered conversation verbatim "
                f"(the template rewrites earlier turns or the reply), first difference at char {at}: "
                f"{after[at:at + 40]!r} vs {expected_head[at:at + 40]!r}"
            )
        return after, encode(self.tokenizer, after[len(expected_head):])

    def _observation_text(self, content: str, role: str) -> tuple[str, str]:
        if not isinstance(content, str):
            raise TypeError(f"observation must be text, got {type(content).__name__}")
        return self._messages_text([{"role": role, "content": content}])

    def _messages_text(self, messages: list[Message]) -> tuple[str, str]:
        rendered = render(self.tokenizer, self.messages + [dict(m) for m in messages], add_generation_prompt=True,
                          **self.template_kwargs)
        if not rendered.startswith(self.rendered):
            at = _first_difference(rendered, self.rendered)
            roles = "/".join(str(m.get("role")) for m in messages)
            raise TemplateDriftError(
                f"adding a {roles} turn changes how earlier turns render (e.g. a template that strips "
                f"earlier reasoning), first difference at char {at}: "
                f"{rendered[at:at + 40]!r} vs {self.rendered[at:at + 40]!r}"
            )
        return rendered[len(self.rendered):], rendered

    def _touches_sampled(self, index: int) -> bool:
        # A byte-level BPE may merge the template's "\n" with sampled leading whitespace, so
        # a mismatch on the template token right before or after a sampled segment counts too.
        for i, seg in enumerate(self.segments):
            if seg.start <= index < seg.end:
                if seg.kind == "sampled":
                    return True
                before = self.segments[i - 1] if i > 0 else None
                after = self.segments[i + 1] if i + 1 < len(self.segments) else None
                return (index == seg.start and before is not None and before.kind == "sampled") or (
                    index == seg.end - 1 and after is not None and after.kind == "sampled"
                )
        return bool(self.segments) and self.segments[-1].kind == "sampled"


def _suffix_prefix_overlap(sampled: list[int], closing: list[int]) -> int:
    """Longest k with sampled[-k:] == closing[:k]."""
    for k in range(min(len(sampled), len(closing)), 0, -1):
        if sampled[-k:] == closing[:k]:
            return k
    return 0


def _first_difference(a: Sequence[Any], b: Sequence[Any]) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


# --- start-up probe -------------------------------------------------------------------

_PROBE_REPLIES = (
    # A reasoning block first: templates that strip earlier <think> blocks must fail here.
    "<think>\nLook at the file first.\n</think>\n\nI will list the files.\n```bash\nls -la\n```",
    "Odd  spacing\there,\n\n  indented line and a trailing space \nTHOUGHT: edit it.",
    "```bash\nsubmit\n```",
)


def probe_template(
    tokenizer: ChatTokenizer, system_prompt: str | None = "You are a probe.", role: str = "user"
) -> None:
    """Run a scripted three-turn conversation through the template; raise TemplateDriftError if
    the ids built turn by turn differ from a full re-render.

    The replies are canonically tokenized, so any mismatch is the template's or the
    tokenizer's fault, not the model's. Turns end with the end-of-turn token, with no end
    token (a max_tokens cut), and with odd whitespace.
    """
    messages: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": role, "content": "Fix the bug in calc.py. Reply with one bash block."})
    conv = TokenConversation.start(tokenizer, messages)
    end_of_turn = _end_of_turn_ids(tokenizer, conv)
    for i, reply in enumerate(_PROBE_REPLIES):
        ids = encode(tokenizer, reply)
        if i != 1:  # turn 1 ends on length: no end-of-turn token sampled
            ids = ids + end_of_turn
        conv.add_generation(ids, [0.0] * len(ids))
        if i + 1 < len(_PROBE_REPLIES):
            conv.add_observation(f"exit code 0\noutput {i}:\n  a.py\n  b.py\n", role=role)
    check = conv.verify()
    if not check.token_exact:
        raise TemplateDriftError(f"probe conversation does not re-render token-exactly: {check.detail}")


def _end_of_turn_ids(tokenizer: ChatTokenizer, conv: TokenConversation) -> list[int]:
    """The special token(s) a model samples to end its turn: the template's closing tokens
    that are special (e.g. `<|im_end|>`), or the tokenizer's EOS."""
    _, closing = TokenConversation(
        tokenizer=tokenizer, messages=list(conv.messages), prompt_ids=[], rendered=conv.rendered
    )._close_turn("x")
    leading = sampled_end_of_turn(tokenizer, closing)
    if leading:
        return leading
    eos = getattr(tokenizer, "eos_token_id", None)
    return [eos] if isinstance(eos, int) else []


def sampled_end_of_turn(tokenizer: ChatTokenizer, closing: Sequence[int]) -> list[int]:
    """The part of a turn's closing ids the model itself samples: the first token, when it is
    special (`<|im_end|>`, `<|eot_id|>`); what follows it (a newline) is the template's."""
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    if hasattr(tokenizer, "get_added_vocab"):
        # GGUF-converted tokenizers may list <|im_end|> only as an added (control) token.
        special |= set(tokenizer.get_added_vocab().values())
    return list(closing[:1]) if closing and closing[0] in special else []


def end_of_turn_ids(tokenizer: ChatTokenizer) -> list[int]:
    """The token a model samples to end its reply under this chat template (e.g. `<|im_end|>`),
    or the tokenizer's EOS; what a scripted engine appends to a reply to end it the same way."""
    conv = TokenConversation.start(tokenizer, [{"role": "user", "content": "x"}])
    return _end_of_turn_ids(tokenizer, conv)
