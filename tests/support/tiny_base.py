"""A base-model folder with a real (tiny) tokenizer and no weights, for the tiers that need no model.

The tokenizer is a byte-level BPE trained in milliseconds on a few sentences, with ChatML special
tokens and the bundled model's chat template, so prompts render and round-trip exactly as they do
with SmolLM2. The folder has a ``config.json`` and the recorded id and hash that
:func:`store.base_model.resolve_base_model` reads, so the app starts on it with a fake engine.
"""

from __future__ import annotations

import json
from pathlib import Path

from store.base_model import BUNDLED_ID, HASH_FILE, BaseModel

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""The chat template SmolLM2-135M-Instruct ships (ChatML with a default system prompt)."""

CORPUS = [
    "Morning! Any scones left? Oh crumbs, two left, petal. I'll take both.",
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face.",
    "The quick brown fox jumps over the lazy dog; the stars are cosmic tonight ~",
]
TINY_HASH = "0" * 63 + "1"


def make_tiny_base(folder: Path) -> BaseModel:
    """Write the tokenizer, a config and the base's id/hash record into ``folder``; return it."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": len(tokenizer)}))
    (folder / HASH_FILE).write_text(json.dumps({"id": BUNDLED_ID, "hash": TINY_HASH}))
    return BaseModel(id=BUNDLED_ID, path=folder.resolve(), hash=TINY_HASH)
