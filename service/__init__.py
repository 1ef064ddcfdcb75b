"""Serving side: one base model in vLLM, a LoRA adapter per persona chosen per request.

Reads personas through :mod:`store`; never imports :mod:`training`.
"""
