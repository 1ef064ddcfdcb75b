"""Token counts of a persona's examples, for ``persona ingest``: what training will really see."""

from __future__ import annotations

from typing import Any

from store.base_model import resolve_base_model
from store.settings import StoreSettings

from .config import TrainConfig


def count_tokens(settings: StoreSettings, examples: Any, config: TrainConfig | None = None) -> dict[str, int]:
    """Tokens, trained tokens and truncated examples per split, with the base tokenizer and template."""
    from .batches import encode_split
    from .model import load_tokenizer

    config = config or TrainConfig()
    tokenizer = load_tokenizer(resolve_base_model(settings.base_model, settings.cache_dir, settings.allow_download))
    counts: dict[str, int] = {}
    train = examples.training_rows(config.whole_sessions)
    for split_name, rows in (("train", train), ("heldout", examples.heldout)):
        encoded = encode_split(tokenizer, rows, config.max_seq_length)
        counts[f"{split_name}_tokens"] = encoded.tokens
        counts[f"{split_name}_trained_tokens"] = encoded.target_tokens
        counts[f"{split_name}_truncated"] = encoded.truncated
    return counts
