"""The fast tier needs no model file: ``base_model`` here is a tiny tokenizer with no weights."""

from __future__ import annotations

import pytest

from tests.support.tiny_base import make_tiny_base


@pytest.fixture(scope="session")
def base_model(tmp_path_factory):
    """A base-model folder with a real tokenizer and the bundled model's chat template, no weights."""
    return make_tiny_base(tmp_path_factory.mktemp("tiny-base"))
