"""Token text for the token strip: the run's tokenizer, loaded once and only when needed.

Which tokenizer: the run's own config says (`config.yaml`: `engine.tokenizer`, else
`model.name`; an `agent-rl rollout` dir's `summary.json`: `model`). Loading it imports
transformers and may convert a GGUF file (tens of seconds), so nothing loads until the first
episode is opened; when it cannot load (the model is not on this machine) the strip shows ids,
and the page says why, rather than failing.
"""
from __future__ import annotations

import json
import logging
import math
import threading
from pathlib import Path
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)

Loader = Callable[[str], Any]


def run_tokenizer_spec(root: Path) -> str | None:
    """The tokenizer a run was played with, from its own files; None when they do not say."""
    import yaml

    candidates = [root / "config.yaml", *sorted(root.glob("*/config.yaml"))]
    for path in candidates:
        try:
            config = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(config, dict):
            continue
        engine, model = config.get("engine") or {}, config.get("model")
        spec = (engine.get("tokenizer") if isinstance(engine, dict) else None) or (
            model.get("name") if isinstance(model, dict) else model
        )
        if isinstance(spec, str) and spec:
            return spec
    for path in [root / "summary.json", *sorted(root.glob("*/summary.json"))]:
        try:
            summary = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(summary, dict) and isinstance(summary.get("model"), str):
            return summary["model"]
    return None


# A logprob of -inf (or NaN from a broken engine) is not JSON a browser can parse; shown as this floor.
LOGPROB_FLOOR = -99.0


def finite_logprob(x: Any) -> float:
    value = float(x)
    return value if math.isfinite(value) else LOGPROB_FLOOR


def _default_loader(spec: str) -> Any:
    from agent_rl.engines.models import load_tokenizer

    return load_tokenizer(spec)


class LazyTokenizer:
    """Loads the tokenizer on first use, once (thread-safe); a failure is remembered, not retried."""

    def __init__(self, spec: str | None, loader: Loader = _default_loader) -> None:
        self.spec = spec
        self._loader = loader
        self._lock = threading.Lock()
        self._loaded = False
        self._tokenizer: Any = None
        self.note = "" if spec else "no tokenizer named by the run (config.yaml model.name): showing token ids"

    def get(self) -> Any:
        """The tokenizer, or None (then `note` says why)."""
        if self.spec is None:
            return None
        with self._lock:
            if not self._loaded:
                self._loaded = True
                try:
                    self._tokenizer = self._loader(self.spec)
                except Exception as exc:  # any failure: ids are still worth showing
                    self.note = f"tokenizer {self.spec!r} could not be loaded ({type(exc).__name__}: {exc}): showing token ids"
                    log.warning("%s", self.note)
            return self._tokenizer


def token_texts(tokenizer: Any, ids: Sequence[int]) -> list[str] | None:
    """Each id's own text (special tokens kept), or None when the tokenizer cannot decode them."""
    if tokenizer is None or not ids:
        return [] if tokenizer is not None else None
    try:
        return [str(t) for t in tokenizer.batch_decode([[int(i)] for i in ids], skip_special_tokens=False,
                                                       clean_up_tokenization_spaces=False)]
    except Exception as exc:  # an id outside the vocabulary: a different tokenizer than the run's
        log.warning("cannot decode token ids with this tokenizer: %s", exc)
        return None


def token_strip(record: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
    """The episode's whole token sequence (prompt then response) as parallel arrays for the page:
    ids, text (None: show ids), loss mask (-1 marks prompt tokens) and behaviour logprobs."""
    prompt = [int(i) for i in record.get("prompt_ids") or []]
    response = [int(i) for i in record.get("response_ids") or []]
    mask = [int(m) for m in record.get("loss_mask") or []]
    logprobs = [finite_logprob(x) for x in record.get("behaviour_logprobs") or []]
    if len(mask) != len(response):  # misaligned record: show the ids, colour nothing
        mask = [0] * len(response)
    if len(logprobs) != len(response):
        logprobs = [0.0] * len(response)
    ids = prompt + response
    return {
        "ids": ids,
        "text": token_texts(tokenizer, ids),
        "mask": [-1] * len(prompt) + mask,
        "logprob": [0.0] * len(prompt) + [round(x, 4) for x in logprobs],
        "prompt_len": len(prompt),
    }
