"""Several router processes as the pods of one deployment: 127.0.0.1, 127.0.0.2, ... with the same ports.

    routers = PeerCluster(tmp_path, config, hosts=3)
    routers.start(1), routers.start(2), routers.start(3)
    routers.wait_agreed([1, 2, 3])

Each router serves the same config file, binds its own loopback address (`--host 127.0.0.N`) on
the one peer port all share, and lists every address in `--peers`; the key comes in ROUTER_PEER_KEY.
A router's view is read from its peer port (`/peer/v1/view`, with the key).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from router.peers.split import DeploymentSlots, per_replica, share
from tests.routing import Config, RouterProcess, Traffic, start_router, wait_until

PEER_KEY = "peer-key-0123456789abcdef"
TIMEOUT_S = 1.5


def loopback(n: int) -> str:
    return f"127.0.0.{n}"


def free_port_on(hosts: list[str]) -> int:
    """A port free on every one of `hosts` (as on pods, each router binds the same one)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind((hosts[0], 0))
            port = probe.getsockname()[1]
        with contextlib.ExitStack() as stack:
            try:
                for host in hosts:
                    sock = stack.enter_context(socket.socket())
                    sock.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free on every loopback address")


@dataclass
class PeerCluster:
    directory: Path
    config: Config
    hosts: int = 3  # the routers that may run: --peers lists them all
    timeout: float = TIMEOUT_S
    port: int = 0
    routers: dict[int, RouterProcess] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.port = self.port or free_port_on([loopback(n) for n in range(1, self.hosts + 1)])

    @property
    def peers(self) -> str:
        return ",".join(f"{loopback(n)}:{self.port}" for n in range(1, self.hosts + 1))

    def identity(self, n: int) -> str:
        return f"{loopback(n)}:{self.port}"

    def start(self, n: int, *extra: str) -> RouterProcess:
        directory = self.directory / f"router-{n}"
        directory.mkdir(exist_ok=True)
        router = start_router(directory, self.config, "--host", loopback(n), "--peer-port", str(self.port),
                              "--peers", self.peers, "--peer-timeout", str(self.timeout), "--debug-endpoints",
                              *extra, env={"ROUTER_PEER_KEY": PEER_KEY})
        self.routers[n] = router
        return router

    def view(self, n: int) -> dict[str, Any]:
        answer = httpx.get(f"http://{self.identity(n)}/peer/v1/view",
                           headers={"authorization": f"Bearer {PEER_KEY}"}, timeout=5)
        answer.raise_for_status()
        view: dict[str, Any] = answer.json()
        return view

    def capacity(self) -> dict[str, DeploymentSlots]:
        return {f"default/{name}": DeploymentSlots(tuple(d["backend"]["urls"]),
                                                   d["requestSettings"]["maxConcurrentRequestsPerInstance"])
                for name, d in self.config.deployments.items()}

    def agreed(self, running: list[int]) -> bool:
        """Every running router sees the same members and holds exactly its share of the split."""
        members = sorted(self.identity(n) for n in running)
        for n in running:
            view = self.view(n)
            if view["members"] != members or not view["valid"]:
                return False
            expected = per_replica(share(self.capacity(), members, self.identity(n)))
            for deployment, replicas in view["slots"].items():
                for url, slots in replicas.items():
                    if not slots["owned"] == slots["held"] == slots["usable"] == expected.get((deployment, url), 0):
                        return False
        return True

    def wait_agreed(self, running: list[int], timeout: float = 15) -> float:
        return wait_until(lambda: self.agreed(running), timeout, f"routers {running} to agree on the split",
                          interval=0.05)

    def held(self, running: list[int]) -> dict[tuple[str, str], int]:
        """Slots held per replica, summed over `running` routers."""
        total: dict[tuple[str, str], int] = {}
        for n in running:
            for deployment, replicas in self.view(n)["slots"].items():
                for url, slots in replicas.items():
                    total[deployment, url] = total.get((deployment, url), 0) + slots["held"]
        return total

    def traffic(self, n: int, limit_s: float = 60) -> Traffic:
        """Steady requests through router `n` (its own address, as a client behind that pod would)."""
        return Traffic(self.routers[n], self.config.endpoint, self.config.key, limit_s=limit_s, host=loopback(n))

    def stop_all(self) -> None:
        for router in self.routers.values():
            with contextlib.suppress(Exception):
                router.stop()


@contextlib.contextmanager
def peer_cluster(directory: Path, config: Config, **options: Any) -> Iterator[PeerCluster]:
    cluster = PeerCluster(directory, config, **options)
    try:
        yield cluster
    finally:
        cluster.stop_all()


def since(start: float) -> float:
    return time.monotonic() - start


def peak_in_flight(model_url: str) -> int:
    """The most requests a sample model has had at once: what a cap is checked against (never a router's count)."""
    return int(httpx.get(f"{model_url}/stats", timeout=5).json()["peak_in_flight"])
