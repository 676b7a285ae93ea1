"""Local mode: edits to the config file take effect under traffic, bad edits are refused."""

from __future__ import annotations

import time
from pathlib import Path

from tests.routing import Config, Traffic, start_router


def test_edits_apply_within_two_seconds_and_bad_edits_are_refused(sample_model_factory,
                                                                  tmp_path: Path) -> None:
    a, b, c = (sample_model_factory("--name", name) for name in ("model-a", "model-b", "model-c"))

    def config(alpha: int, beta: int, beta_urls: list[str]) -> Config:
        return Config().deployment("alpha", [a.url], weight=alpha).deployment("beta", beta_urls, weight=beta)

    router = start_router(tmp_path, config(100, 0, [b.url]))
    try:
        with Traffic(router, "demo", router.key, limit_s=60) as traffic:
            traffic.wait_for(lambda n: n == "model-a", 0)

            # 1. shift all traffic by an atomic rename
            t0 = time.monotonic()
            router.write_config(config(0, 100, [b.url]).yaml())
            assert traffic.wait_for(lambda n: n == "model-b", t0) < 2.0
            time.sleep(0.3)
            assert traffic.names_after(time.monotonic() - 0.2) == {"model-b"}

            # 2. an invalid in-place edit is refused with its reason; the last good state serves
            seen = len(router.process.events)
            bad = config(0, 50, [b.url]).yaml()
            router.write_config(bad, atomic=False)
            rejected = router.process.wait_for_event("config.rejected", timeout=5, after=seen)
            assert any("spec.traffic" in p and "100" in p for p in rejected["problems"]), rejected
            t1 = time.monotonic()
            time.sleep(0.5)
            assert traffic.names_after(t1) == {"model-b"}

            # 3. a replica added in place takes requests; 4. a removed one gets none
            t2 = time.monotonic()
            router.write_config(config(0, 100, [b.url, c.url]).yaml(), atomic=False)
            assert traffic.wait_for(lambda n: n == "model-c", t2) < 2.0
            router.write_config(config(0, 100, [c.url]).yaml())
            router.process.wait_for_event("config.reloaded", timeout=5, after=len(router.process.events) - 1)
            time.sleep(0.5)
            t3 = time.monotonic()
            time.sleep(0.5)
            assert traffic.names_after(t3) == {"model-c"}

            # 5. the file vanishing (a botched deploy) changes nothing
            router.config_path.unlink()
            time.sleep(0.6)
            t4 = time.monotonic()
            time.sleep(0.3)
            assert traffic.names_after(t4) == {"model-c"}
        assert traffic.failures == []
        assert len(traffic.answers) > 100
    finally:
        router.stop()
