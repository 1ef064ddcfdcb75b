"""The personas folder watcher: a slow copy starts one run once it settles; training's own files none."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service.watcher import PersonaWatcher


async def _wait_for(check, timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def test_a_slow_copy_settles_into_one_call_and_adapters_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "personas"
    calls: list[str] = []

    async def settled(name: str) -> None:
        calls.append(name)

    watcher = PersonaWatcher(root, settled, settle_s=1.0)
    task = asyncio.create_task(watcher.run())
    await asyncio.sleep(0.5)
    logs = root / "nova" / "logs"
    logs.mkdir(parents=True)
    for part in range(4):  # a copy a piece at a time, each gap shorter than the settle time
        with open(logs / "chat.txt", "a") as handle:
            handle.write(f"Sam: hello {part}\nNova: hi {part}\n")
        await asyncio.sleep(0.5)
    assert calls == []
    await _wait_for(lambda: calls == ["nova"])
    (root / "nova" / "adapters" / "v1").mkdir(parents=True)
    (root / "nova" / "adapters" / "v1" / "metadata.json").write_text("{}")
    (root / ".jobs").mkdir()
    (root / ".jobs" / "ftjob-1.json").write_text("{}")
    (root / "Not A Name").mkdir()
    await asyncio.sleep(2.0)
    assert calls == ["nova"] and watcher.generation == 1
    watcher.stop()
    await asyncio.wait_for(task, timeout=10)


def test_paths_map_to_personas(tmp_path: Path) -> None:
    watcher = PersonaWatcher(tmp_path, None)
    assert watcher.persona_of(str(tmp_path / "wren" / "logs" / "a.txt")) == "wren"
    assert watcher.persona_of(str(tmp_path / "wren" / "persona.yaml")) == "wren"
    assert watcher.persona_of(str(tmp_path / "wren" / "adapters" / "LIVE")) is None
    assert watcher.persona_of(str(tmp_path / "wren" / "logs" / ".partial")) is None
    assert watcher.persona_of(str(tmp_path.parent / "elsewhere")) is None
