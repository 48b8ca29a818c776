"""A SentencePiece-BPE tokenizer rebuilt from a GGUF file, as the model was trained with it.

transformers reads a SentencePiece ("llama") GGUF vocabulary without merges, and for Gemma
builds a Unigram model from the piece scores. Gemma's tokenizer is SentencePiece *BPE*, so
that Unigram splits text differently from pretraining (`return` → `re` `turn`), which costs a
small model part of what it knows.

The GGUF keeps everything SentencePiece needs: pieces, scores and types (llama.cpp's token
types are SentencePiece's piece types), the special ids and whether a space prefix is added.
One change is undone: llama.cpp stores user-defined pieces with the whitespace marker `▁`
turned back into spaces (it matches them in raw text), while SentencePiece keeps `▁`. From
those fields this module writes a SentencePiece `ModelProto` (`tokenizer.model`), which the
`sentencepiece` library itself loads (the reference for the tests), and converts it into an
HF fast tokenizer with transformers' own converter. User-defined pieces (whitespace runs, line
breaks, tabs) become added tokens, matched greedily before BPE as SentencePiece matches them;
otherwise BPE would split a run of indentation differently.

One difference from SentencePiece is deliberate and HF's convention: a control token written
as text (`<start_of_turn>`) becomes that token, which is what a chat template relies on;
SentencePiece would spell it out character by character.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# llama.cpp's token types (gguf.TokenType) are SentencePiece's ModelProto.SentencePiece.Type.
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


def gguf_tokenizer_fields(gguf_file: Path) -> dict[str, Any]:
    """The `tokenizer.ggml.*` fields of a GGUF file (keys without the prefix)."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_file))
    prefix = "tokenizer.ggml."
    return {name[len(prefix):]: field.contents() for name, field in reader.fields.items() if name.startswith(prefix)}


def sentencepiece_model(fields: dict[str, Any]) -> bytes:
    """A serialized SentencePiece BPE `ModelProto` from GGUF tokenizer fields."""
    from sentencepiece import sentencepiece_model_pb2 as spm_pb2

    if fields.get("model") != "llama":
        raise ValueError(f"not a SentencePiece vocabulary (tokenizer.ggml.model={fields.get('model')!r})")
    if "merges" in fields:
        raise ValueError("this GGUF vocabulary has merges: it is not SentencePiece BPE")
    tokens, scores, types = fields["tokens"], fields["scores"], fields["token_type"]
    unk = int(fields.get("unknown_token_id", 0))
    proto = spm_pb2.ModelProto()
    for index, (piece, score, kind) in enumerate(zip(tokens, scores, types)):
        entry = proto.pieces.add()
        entry.piece = piece.replace(" ", "\u2581") if kind == USER_DEFINED else piece
        entry.score = float(score)
        # llama.cpp marks Gemma's <unk> a control token; SentencePiece needs exactly one UNKNOWN.
        entry.type = UNKNOWN if index == unk else int(kind)
    trainer = proto.trainer_spec
    trainer.model_type = spm_pb2.TrainerSpec.BPE
    trainer.vocab_size = len(tokens)
    trainer.byte_fallback = BYTE in set(int(t) for t in types)
    trainer.unk_id = unk
    trainer.bos_id = int(fields.get("bos_token_id", -1))
    trainer.eos_id = int(fields.get("eos_token_id", -1))
    trainer.pad_id = int(fields.get("padding_token_id", -1))
    normalizer = proto.normalizer_spec
    normalizer.name = "identity"  # the GGUF carries no normalization rule; Gemma's is none
    normalizer.add_dummy_prefix = bool(fields.get("add_space_prefix", False))
    normalizer.remove_extra_whitespaces = False
    normalizer.escape_whitespaces = True
    return proto.SerializeToString()


def sentencepiece_bpe_tokenizer(gguf_file: Path, like: Any, workdir: Path) -> Any:
    """The HF fast tokenizer equal to SentencePiece's on this GGUF's vocabulary, with the
    special tokens, BOS/EOS rule and padding side of `like` (transformers' own reading of the
    GGUF). `workdir` holds the `tokenizer.model` it is built from; `save_pretrained` copies it
    beside the checkpoint (for a slow tokenizer, or an engine that wants the proto)."""
    from tokenizers import AddedToken
    from transformers.convert_slow_tokenizer import GemmaConverter

    fields = gguf_tokenizer_fields(gguf_file)
    model_file = Path(workdir) / "tokenizer.model"
    model_file.write_bytes(sentencepiece_model(fields))

    # The converter reads the proto through `vocab_file`, the special tokens by name; its
    # normalizer (spaces → ▁), BPE merges from the scores, byte fallback and decoder are
    # those of SentencePiece BPE.
    class Spec:
        vocab_file = str(model_file)
        pad_token, eos_token, bos_token, unk_token = (str(like.pad_token), str(like.eos_token),
                                                      str(like.bos_token), str(like.unk_token))

    backend = GemmaConverter(Spec()).converted()
    user_defined = [p.replace(" ", "\u2581") for p, kind in zip(fields["tokens"], fields["token_type"])
                    if kind == USER_DEFINED]
    backend.add_tokens([AddedToken(p, normalized=True, special=False) for p in user_defined])
    kwargs = {k: getattr(like, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token", "padding_side")}
    for flag in ("add_bos_token", "add_eos_token"):  # the post-processor follows them
        if hasattr(like, flag):
            kwargs[flag] = getattr(like, flag)
    return type(like)(tokenizer_object=backend, vocab_file=str(model_file), **kwargs)
