"""The personas folder watcher: a slow copy starts one run once it settles; training's own files none."""

from __future__ import annotations

import asyncio
from pathlib import Path

from service.watcher import PersonaWatcher
from tests.support.polling import wait_until_async
from tests.support.watching import seen, start_watching


async def test_a_slow_copy_settles_into_one_call_and_adapters_are_ignored(tmp_path: Path) -> None:
    root = tmp_path / "personas"
    calls: list[str] = []

    async def settled(name: str) -> None:
        calls.append(name)

    adapters = root / "nova" / "adapters"
    adapters.mkdir(parents=True)  # folders watched from the start report their files in order
    (root / ".jobs").mkdir()
    watcher = PersonaWatcher(root, settled, settle_s=1.5)
    task = await start_watching(watcher, root / ".probe")
    logs = root / "nova" / "logs"
    logs.mkdir(parents=True)
    for part in range(4):  # a copy a piece at a time, each piece following the one the watcher saw
        since = watcher.batches
        with open(logs / "chat.txt", "a") as handle:
            handle.write(f"Sam: hello {part}\nNova: hi {part}\n")
        await seen(watcher, since, f"piece {part} of the copy")
        assert calls == [], "a copy still arriving is not settled"
    await wait_until_async(lambda: calls, 15, "the settled copy to be reported")
    assert calls == ["nova"]
    (adapters / "v1").mkdir()
    (adapters / "LIVE").write_text("v1\n")
    (root / ".jobs" / "ftjob-1.json").write_text("{}")
    (root / "Not A Name").mkdir()
    (root / "later" / "logs").mkdir(parents=True)  # written last: reported after anything written before it
    await wait_until_async(lambda: "later" in calls, 15, "the persona written last to be reported")
    assert calls == ["nova", "later"] and watcher.generation == 2
    watcher.stop()
    await asyncio.wait_for(task, timeout=10)


def test_paths_map_to_personas(tmp_path: Path) -> None:
    watcher = PersonaWatcher(tmp_path, None)
    assert watcher.persona_of(str(tmp_path / "wren" / "logs" / "a.txt")) == "wren"
    assert watcher.persona_of(str(tmp_path / "wren" / "persona.yaml")) == "wren"
    assert watcher.persona_of(str(tmp_path / "wren" / "adapters" / "LIVE")) is None
    assert watcher.persona_of(str(tmp_path / "wren" / "logs" / ".partial")) is None
    assert watcher.persona_of(str(tmp_path.parent / "elsewhere")) is None
