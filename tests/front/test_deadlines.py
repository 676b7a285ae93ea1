"""Request timeouts kept per timeout length, with one loop timer: on a real event loop."""

from __future__ import annotations

import asyncio

from router.front.deadlines import Deadlines


class Request:
    def __init__(self, name: str, log: list[tuple[str, float]], loop: asyncio.AbstractEventLoop) -> None:
        self.name, self.log, self.loop = name, log, loop

    def expire(self) -> None:
        self.log.append((self.name, self.loop.time()))


def test_requests_expire_in_order_after_their_timeout_unless_discarded() -> None:
    async def run() -> tuple[list[tuple[str, float]], float, Deadlines]:
        loop = asyncio.get_running_loop()
        log: list[tuple[str, float]] = []
        deadlines = Deadlines(loop, 0.05)
        start = loop.time()
        a, b, c = (Request(n, log, loop) for n in "abc")
        deadlines.add(a, loop.time())
        await asyncio.sleep(0.02)
        deadlines.add(b, loop.time())
        deadlines.add(c, loop.time())
        deadlines.discard(b)  # ended in time
        await asyncio.sleep(0.5)
        return log, start, deadlines

    log, start, deadlines = asyncio.run(run())
    assert [name for name, _ in log] == ["a", "c"]
    assert 0.049 <= log[0][1] - start < 0.5 and 0.069 <= log[1][1] - start < 0.5  # loose: a busy machine
    assert repr(deadlines) == "<Deadlines timeout=0.05s pending=0>"


def test_a_failing_expiry_does_not_keep_the_others_from_expiring() -> None:
    class Failing:
        def expire(self) -> None:
            raise RuntimeError("boom")

    async def run() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        log: list[tuple[str, float]] = []
        deadlines = Deadlines(loop, 0.01)
        deadlines.add(Failing(), loop.time())
        deadlines.add(Request("after", log, loop), loop.time())
        await asyncio.sleep(0.08)
        return log

    assert [name for name, _ in asyncio.run(run())] == ["after"]


def test_an_expiry_that_adds_a_request_leaves_one_timer(monkeypatch) -> None:
    fired: list[float] = []
    original = Deadlines._fire

    def counting(self: Deadlines) -> None:
        fired.append(0.0)
        original(self)

    monkeypatch.setattr(Deadlines, "_fire", counting)

    async def run() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        log: list[tuple[str, float]] = []
        deadlines = Deadlines(loop, 0.02)

        class Chaining(Request):  # like a timed-out request whose pipelined successor starts at once
            def expire(self) -> None:
                super().expire()
                deadlines.add(Request("next", log, loop), loop.time())

        deadlines.add(Chaining("first", log, loop), loop.time())
        await asyncio.sleep(0.5)
        return log

    assert [name for name, _ in asyncio.run(run())] == ["first", "next"]
    assert len(fired) == 2  # one timer for each, not a second chain of timers
