"""A child process that drains an outbox into a file sink, one line per delivered result, for the kill -9 test.

    python -m tests.helpers.drain_child OUTBOX OUT_FILE [DELAY_S]

Each delivery is written and flushed before `deliver` returns, as a real sink's confirmation would be; the test
kills the process at a moment of its choosing and counts what was delivered twice.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import TextIO

from adapters.base import Result, Stats
from edge_runtime.outbox import Outbox, deliver_forever


class FileSink:
    def __init__(self, out: TextIO, delay_s: float) -> None:
        self.name, self.stats, self._out, self._delay_s = "s", Stats(), out, delay_s

    async def open(self) -> None:
        pass

    async def deliver(self, result: Result) -> None:
        await asyncio.sleep(self._delay_s)  # a network round trip
        self._out.write(f"{result.seq}\n")
        self._out.flush()

    async def close(self) -> None:
        pass


async def main(outbox: Path, out_file: Path, delay_s: float) -> None:
    box = Outbox(outbox)
    await box.open()
    with out_file.open("a") as out:
        task = asyncio.create_task(deliver_forever(box, FileSink(out, delay_s)))
        while box.pending_rows:
            await asyncio.sleep(0.01)
        task.cancel()
    await box.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.0))
