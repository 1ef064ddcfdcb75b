"""Training that yields to the server keeps its loss curve: the worker pauses the training process from
outside (:class:`training.yielding.CpuYielder`) while users chat, and the run it resumes trains the same
steps as one nobody paused (same seed, same losses). Runs the tiny random Llama in a child process."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

from tests.support.polling import wait_until
from training.yielding import TICK_S, CpuYielder

from .test_train_passes import run, tiny_lm  # noqa: F401  (the fixture)

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import json, pathlib, sys, time
from store.base_model import BaseModel
from tests.fast.test_train_passes import HELDOUT, QUICK, TRAIN
from training.config import TrainConfig
from training.loop import LoraRecipe

base = BaseModel(id=sys.argv[1], path=pathlib.Path(sys.argv[2]), hash=sys.argv[3])
started = pathlib.Path(sys.argv[5])

def step(progress):
    started.touch()
    time.sleep(0.2)  # steps long enough for the yielder to pause in the middle of the run

config = TrainConfig(**QUICK, epochs=1)
recipe = LoraRecipe(base, config, work_dir=pathlib.Path(sys.argv[4]), progress=False, on_step=step)
recipe.setup(TRAIN, HELDOUT)
result = recipe.train()
print(json.dumps({"losses": [h["loss"] for h in result.history], "eval": result.eval_loss_after}))
"""


def test_a_training_run_paused_and_resumed_by_its_worker_trains_the_same_steps(tiny_lm, tmp_path):  # noqa: F811
    _, plain = run(tiny_lm, tmp_path / "plain", epochs=1)
    started = tmp_path / "started"
    argv = [tiny_lm.id, str(tiny_lm.path), tiny_lm.hash, str(tmp_path / "paused"), str(started)]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *argv],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    yielder = CpuYielder(child.pid, busy=lambda: True, share=0.5, period_s=0.3)
    try:
        wait_until(started.exists, timeout=120, what="the child's first training step")
        while child.poll() is None:  # a user chatting for the whole run: paused half of every period
            yielder.tick()
            time.sleep(TICK_S)
    finally:
        yielder.resume()
        out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    assert yielder.paused_s > 0.3  # it really was paused, several times
    paused = json.loads(out.splitlines()[-1])
    assert len(paused["losses"]) == len(plain.history) >= 4
    for got, want in zip(paused["losses"], plain.history, strict=True):
        assert math.isclose(got, want["loss"], rel_tol=1e-6), (got, want)
    assert math.isclose(paused["eval"], plain.eval_loss_after, rel_tol=1e-6)
