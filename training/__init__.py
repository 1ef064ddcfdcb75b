"""Training side: from chat logs in ``personas/<name>/logs/`` to a published LoRA adapter version.

Reads personas through :mod:`store`; never imports :mod:`service`.
"""
