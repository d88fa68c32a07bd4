"""An acknowledged write to the embedded store survives ``kill -9`` of its process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from apiserver.storage.interface import NotFound
from apiserver.storage.sqlite import SqliteStorage

ROOT = Path(__file__).resolve().parents[2]

# Writes from 8 tasks until killed, printing "key revision" once each create returned.
WRITER = """
import asyncio, sys
from apiserver.storage.sqlite import SqliteStorage

async def main(path):
    store = SqliteStorage(path)
    await store.start()
    print("ready", flush=True)

    async def writer(w):
        i = 0
        while True:
            key = f"/registry/configmaps/default/w{w}-{i}"
            obj = {"metadata": {"name": f"w{w}-{i}"}, "data": {"payload": "x" * 512}}
            created = await store.create(key, obj)
            print(key, created["metadata"]["resourceVersion"], flush=True)
            i += 1

    await asyncio.gather(*(writer(w) for w in range(8)))

asyncio.run(main(sys.argv[1]))
"""


def run_writer_until_killed(path: Path, acknowledged: int) -> dict[str, int]:
    """Start the writer, SIGKILL it once ``acknowledged`` writes returned, give them back."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    acked: dict[str, int] = {}
    deadline = time.monotonic() + 60
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready", process.stderr
        while len(acked) < acknowledged and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            key, revision = line.split()
            acked[key] = int(revision)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL
    assert len(acked) >= acknowledged, f"writer stopped early: {process.stderr}"
    return acked


async def test_acknowledged_writes_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite"
    acked = await asyncio.to_thread(run_writer_until_killed, path, 400)
    store = SqliteStorage(path, compact_interval=0)
    await store.start()
    try:
        missing = []
        for key, revision in acked.items():
            try:
                got = await store.get(key)
            except NotFound:
                missing.append(key)
                continue
            assert got["metadata"]["resourceVersion"] == str(revision)
        assert missing == [], f"{len(missing)} acknowledged writes were lost"
        assert await store.current_revision() >= max(acked.values())
        # The store keeps going after the crash, with revisions moving on.
        after = await store.create("/registry/configmaps/default/after", {"metadata": {}})
        assert int(after["metadata"]["resourceVersion"]) > max(acked.values())
    finally:
        await store.close()
