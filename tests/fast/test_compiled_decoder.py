"""``compile_decoder``: the decoder compiled with ``torch.compile`` trains the same steps as the
plain one (same seed, same losses), on the tiny random Llama."""

from __future__ import annotations

import math

from .test_train_passes import run, tiny_lm  # noqa: F401  (the fixture)


def test_a_compiled_decoder_trains_the_same_steps(tiny_lm, tmp_path):  # noqa: F811
    _, plain = run(tiny_lm, tmp_path / "plain", epochs=1, max_steps=3)
    recipe, compiled = run(tiny_lm, tmp_path / "compiled", epochs=1, max_steps=3, compile_decoder=True)
    assert type(recipe.loss_sum.decoder).__name__ == "OptimizedModule"
    assert len(compiled.history) == len(plain.history) == 3
    for got, want in zip(compiled.history, plain.history, strict=True):
        assert math.isclose(got["loss"], want["loss"], rel_tol=1e-4), (got, want)
    assert math.isclose(compiled.eval_loss_after, plain.eval_loss_after, rel_tol=1e-4)
