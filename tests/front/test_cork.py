"""Corked writes: one callback per loop turn flushes every connection, even when one of them fails."""

from __future__ import annotations

import asyncio

from router.proxy.cork import Cork


class Conn:
    def __init__(self, cork: Cork, fail: bool = False) -> None:
        self.cork, self.fail, self.flushed = cork, fail, 0
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self.out:
            self.cork.add(self)
        self.out.append(data)

    def flush(self) -> None:
        self.out = []
        self.flushed += 1
        if self.fail:
            raise OSError("broken")


def test_writes_of_one_turn_leave_together_and_a_failing_flush_strands_no_other() -> None:
    async def run() -> tuple[Conn, Conn, Conn]:
        cork = Cork(asyncio.get_running_loop())
        a, broken, b = Conn(cork), Conn(cork, fail=True), Conn(cork)
        for conn in (a, broken, b, a, b):
            conn.write(b"x")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        b.write(b"later")  # b registers again: its earlier output left
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return a, broken, b

    a, broken, b = asyncio.run(run())
    assert (a.flushed, broken.flushed, b.flushed) == (1, 1, 2)
