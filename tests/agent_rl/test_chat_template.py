"""Token-delta logic with the real SmolLM2 tokenizer, its own template and a Qwen2 ChatML template."""
from __future__ import annotations

import copy

import pytest

from agent_rl.rollout.chat_template import TemplateDriftError, TokenConversation, probe_template

# Qwen2-Instruct's chat template: ChatML with a default system prompt when none is given.
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen3-style: reasoning in earlier assistant turns is dropped once a later turn follows.
THINK_STRIPPING_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and not loop.last and '</think>' in message.content %}"
    "{{- '<|im_start|>assistant\n' + message.content.split('</think>')[-1].lstrip('\n') + '<|im_end|>\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)

IM_END = 2
NEWLINE = 198


@pytest.fixture(scope="module")
def smol_tokenizer():
    from agent_rl.engines.models import load_tokenizer

    return load_tokenizer("smollm2-135m")


@pytest.fixture(scope="module")
def qwen2_tokenizer(smol_tokenizer):
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = QWEN2_TEMPLATE
    return tok


@pytest.fixture(params=["smollm2", "qwen2"])
def tokenizer(request, smol_tokenizer, qwen2_tokenizer):
    return smol_tokenizer if request.param == "smollm2" else qwen2_tokenizer


def enc(tok, text: str) -> list[int]:
    return tok.encode(text, add_special_tokens=False)


def start(tok, system: str | None = "Be terse.") -> TokenConversation:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": "Fix calc.py"})
    return TokenConversation.start(tok, messages)


def test_prompt_ids_are_the_templates_generation_prompt(tokenizer):
    conv = start(tokenizer)
    expected = tokenizer.apply_chat_template(
        conv.messages, tokenize=True, add_generation_prompt=True
    )
    assert conv.prompt_ids == list(expected)
    assert tokenizer.decode(conv.prompt_ids).endswith("<|im_start|>assistant\n")


def test_generation_ending_in_eos_gets_only_the_newline(tokenizer):
    conv = start(tokenizer)
    sampled = enc(tokenizer, "I will run ls.\n```bash\nls\n```") + [IM_END]
    logprobs = [-0.5] * len(sampled)
    turn = conv.add_generation(sampled, logprobs)
    n = len(sampled)
    assert conv.response_ids == sampled + [NEWLINE]
    assert conv.loss_mask == [1] * n + [0]
    assert conv.logprobs == logprobs + [0.0]
    assert turn.text == "I will run ls.\n```bash\nls\n```"
    assert turn.closing_ids == [NEWLINE]
    assert conv.verify().token_exact


def test_generation_cut_on_length_gets_end_of_turn_and_newline(tokenizer):
    conv = start(tokenizer)
    sampled = enc(tokenizer, "Let me look at the")
    conv.add_generation(sampled, [-1.0] * len(sampled))
    assert conv.response_ids == sampled + [IM_END, NEWLINE]
    assert conv.loss_mask == [1] * len(sampled) + [0, 0]
    assert conv.logprobs[-2:] == [0.0, 0.0]
    assert conv.verify().token_exact


def test_observation_is_the_template_delta_with_generation_prompt(tokenizer):
    conv = start(tokenizer)
    sampled = enc(tokenizer, "```bash\nls\n```") + [IM_END]
    conv.add_generation(sampled, [0.0] * len(sampled))
    before = len(conv)
    delta = conv.add_observation("a.py\nb.py\n")
    assert tokenizer.decode(delta) == "<|im_start|>user\na.py\nb.py\n<|im_end|>\n<|im_start|>assistant\n"
    assert conv.response_ids[before - len(conv.prompt_ids):] == delta
    assert conv.loss_mask[-len(delta):] == [0] * len(delta)
    full = tokenizer.apply_chat_template(conv.messages, tokenize=True, add_generation_prompt=True)
    assert list(full) == conv.prompt_ids + conv.response_ids


def test_multi_turn_with_odd_whitespace_rerenders_exactly(tokenizer):
    conv = start(tokenizer)
    replies = [
        ("Odd  spacing\there,\n\n  indented \n\n\nTHOUGHT:  x", True),
        ("tabs\t\tand trailing spaces   ", False),  # cut on length
        ("```bash\nsubmit\n```", True),
    ]
    sampled_segments = []
    for i, (text, eos) in enumerate(replies):
        ids = enc(tokenizer, text) + ([IM_END] if eos else [])
        sampled_segments.append(ids)
        conv.add_generation(ids, [-0.1] * len(ids))
        if i < len(replies) - 1:
            conv.add_observation(f"  output {i}\n\n\tindented\n")
    check = conv.verify()
    assert check.token_exact and not check.sampled_noncanonical
    # Every sampled segment sits verbatim in the response, exactly where the mask is 1.
    masked = [t for t, m in zip(conv.response_ids, conv.loss_mask) if m]
    assert masked == [t for seg in sampled_segments for t in seg]
    rendered = tokenizer.apply_chat_template(conv.messages, tokenize=True, add_generation_prompt=False)
    assert list(rendered) == conv.prompt_ids + conv.response_ids


def test_qwen2_default_system_prompt_when_none_given(qwen2_tokenizer):
    conv = start(qwen2_tokenizer, system=None)
    assert qwen2_tokenizer.decode(conv.prompt_ids).startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nFix calc.py"
    )
    ids = enc(qwen2_tokenizer, "ok") + [IM_END]
    conv.add_generation(ids, [0.0] * len(ids))
    conv.add_observation("next")
    # The default system prompt is not a message: re-rendering still reproduces it.
    assert [m["role"] for m in conv.messages] == ["user", "assistant", "user"]
    assert conv.verify().token_exact


def test_noncanonical_sampled_tokens_stay_verbatim_and_are_reported(smol_tokenizer):
    tok = smol_tokenizer
    conv = start(tok)
    # "hello" sampled as two pieces: legal for a sampler, not what the tokenizer would produce.
    pieces = enc(tok, "hel") + enc(tok, "lo")
    assert pieces != enc(tok, "hello")
    sampled = pieces + [IM_END]
    conv.add_generation(sampled, [0.0] * len(sampled))
    conv.add_observation("ok")
    assert conv.response_ids[: len(sampled)] == sampled
    check = conv.verify()
    assert not check.token_exact and check.sampled_noncanonical
    assert check.mismatch_at == len(conv.prompt_ids)


def test_leading_whitespace_merging_with_template_newline_is_not_drift(smol_tokenizer):
    tok = smol_tokenizer
    conv = start(tok)
    sampled = enc(tok, "  \n  x") + [IM_END]
    conv.add_generation(sampled, [0.0] * len(sampled))
    check = conv.verify()
    # Byte-level BPE merges "assistant\n" + "  \n" differently in a full render; the ids are
    # still what the model saw, so this is reported, not raised.
    assert check.sampled_noncanonical


def test_partial_utf8_cut_on_length(smol_tokenizer):
    tok = smol_tokenizer
    conv = start(tok)
    ids = enc(tok, "日本")
    sampled = ids[:1]  # cut in the middle of a multi-byte character
    turn = conv.add_generation(sampled, [0.0])
    assert conv.response_ids[:1] == sampled
    assert "\ufffd" in turn.content
    check = conv.verify()  # text matches; tokens can't (replacement char re-encodes differently)
    assert check.sampled_noncanonical


def test_special_token_sampled_mid_reply_is_kept(smol_tokenizer):
    tok = smol_tokenizer
    conv = start(tok)
    sampled = enc(tok, "done") + [0] + enc(tok, " really") + [IM_END]  # 0 = <|endoftext|>
    turn = conv.add_generation(sampled, [0.0] * len(sampled))
    assert "<|endoftext|>" in turn.content and "<|endoftext|>" not in turn.text
    conv.add_observation("fine")
    assert conv.verify().token_exact


def test_empty_generation(smol_tokenizer):
    conv = start(smol_tokenizer)
    conv.add_generation([], [])
    assert conv.response_ids == [IM_END, NEWLINE] and conv.loss_mask == [0, 0]
    assert conv.verify().token_exact


def test_probe_accepts_chatml_templates(smol_tokenizer, qwen2_tokenizer):
    probe_template(smol_tokenizer)
    probe_template(qwen2_tokenizer, system_prompt=None)


def test_think_stripping_template_is_detected(smol_tokenizer):
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = THINK_STRIPPING_TEMPLATE
    with pytest.raises(TemplateDriftError, match="changes how earlier turns render"):
        probe_template(tok)
    conv = start(tok)
    ids = enc(tok, "<think>\nhmm\n</think>\n\nls") + [IM_END]
    conv.add_generation(ids, [0.0] * len(ids))
    with pytest.raises(TemplateDriftError):
        conv.add_observation("a.py")


def test_template_that_rewrites_the_reply_is_detected(smol_tokenizer):
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = tok.chat_template.replace("message['content']", "message['content'] | trim")
    conv = start(tok)
    ids = enc(tok, "ls   ")
    with pytest.raises(TemplateDriftError, match="does not extend"):
        conv.add_generation(ids, [0.0] * len(ids))


def test_misuse_is_a_clear_error(smol_tokenizer):
    conv = start(smol_tokenizer)
    with pytest.raises(RuntimeError, match="before the assistant"):
        conv.add_observation("x")
    with pytest.raises(ValueError, match="logprobs"):
        conv.add_generation([5, 6], [0.0])
    tok = copy.deepcopy(smol_tokenizer)
    tok.chat_template = None
    with pytest.raises(TemplateDriftError, match="no chat_template"):
        start(tok)
