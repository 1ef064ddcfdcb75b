"""Model tier: the bundled SmolLM2 (converted once into the cache), no vLLM.

Rendering with the real tokenizer and short real LoRA/QLoRA training runs live here, so the fast tier
needs no model file.
"""
