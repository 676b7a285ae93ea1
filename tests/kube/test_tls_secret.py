"""`serve --kubernetes --ssl-secret NAME` as a real process: TLS from a Secret of the (fake) cluster.

The unmodified client watches the Secret through the fake API server; a real sample model answers
behind an endpoint of the same cluster; clients verify the router against a dev CA. The Secret is
replaced under steady traffic (keep-alive and a new connection per request): new handshakes present
the new certificate within 2 s and no request fails; an invalid replacement, or the Secret's
deletion, is refused with its message and the last good certificate keeps serving. Without a
valid Secret at start the router does not start, and says why.
"""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from router.tls import PemPair
from tests.helpers import SampleModel, run_to_exit, start_process
from tests.kube.cluster import secret, seed_demo, wait_until
from tests.kube.fake_apiserver import FakeApiServer
from tests.tls.conftest import TlsRouter
from tests.tls.pki import CNAME, DAY, Pki, leaf_fingerprint, new_pki, now, served_fingerprint
from tests.tls.test_rotation import Traffic, assert_still_served, wait_until_served

KEY = "key-tls-0123456789"
SECRET = "router-tls"
SERVE = [sys.executable, "-m", "router.cli", "serve", "--kubernetes", "--allow-loopback-replicas",
         "--ssl-secret", SECRET, "--ssl-cname", CNAME, "--host", "127.0.0.1", "--tls-port", "0", "--admin-port", "0"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return new_pki(tmp_path_factory.mktemp("pki"))


def tls_secret(pair: PemPair, keys: tuple[str, str] = ("cert.pem", "key.pem")) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": "default"},
            "type": "Opaque" if keys[0] == "cert.pem" else "kubernetes.io/tls",
            "data": {keys[0]: base64.b64encode(pair.cert).decode(), keys[1]: base64.b64encode(pair.key).decode()}}


@pytest.fixture
def cluster(api_server: FakeApiServer, sample_model_factory: Callable[..., SampleModel]) -> FakeApiServer:
    """An endpoint `demo` whose one deployment is a real sample model."""
    seed_demo(api_server, KEY, sample_model_factory("--name", "blue-0").port)
    return api_server


@pytest.fixture
def router(cluster: FakeApiServer, kubeconfig: Path, pki: Pki) -> Iterator[TlsRouter]:
    process = start_process([*SERVE, "--kubeconfig", str(kubeconfig)], timeout=30)
    try:
        yield TlsRouter(process, int(process.ready["tls_port"]), None, kubeconfig, key=KEY)
    finally:
        print(*process.lines[-60:], sep="\n")  # shown if the test failed
        assert process.stop() == 0


def ready(admin_port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{admin_port}/readyz", timeout=5).status_code == 200


def rejected(router: TlsRouter, after: int) -> list[str]:
    return list(router.process.wait_for_event("tls.rejected", timeout=5, after=after)["problems"])


@pytest.fixture
def first(cluster: FakeApiServer, pki: Pki) -> str:
    """The certificate in the Secret when the router starts: its fingerprint."""
    issued = pki.server()
    cluster.create("secrets", tls_secret(pki.pair(issued)))
    return leaf_fingerprint(issued)


def test_the_secret_is_served_and_rotated_under_traffic(cluster: FakeApiServer, pki: Pki, first: str,
                                                        router: TlsRouter) -> None:
    # the certificate was there before the listener: the first handshake presents it
    assert served_fingerprint(router.tls_port, pki.client()) == first
    names = [e["event"] for e in router.process.events]
    assert names.index("tls.certificate") < names.index("listening")
    assert router.process.events_named("tls.certificate")[0]["origin"] == \
        f"sslSecret {SECRET} in namespace default: cert.pem"
    wait_until(lambda: ready(router.process.ready["admin_port"]), 10, "/readyz answers 200")
    with httpx.Client(verify=pki.client()) as client:
        answer = client.post(router.url(), content=b"{}", headers=router.auth, timeout=10)
    assert answer.status_code == 200 and answer.json()["name"] == "blue-0"

    second, third = pki.server(), pki.server()
    with Traffic(router, pki).running() as traffic:
        time.sleep(0.3)
        # 1. replaced, as a kubernetes.io/tls Secret (tls.crt, tls.key): new handshakes get it within 2 s
        events = len(router.process.events)
        cluster.replace("secrets", tls_secret(pki.pair(second), ("tls.crt", "tls.key")))
        wait_until_served(router, pki, leaf_fingerprint(second))
        rotated = router.process.wait_for_event("tls.rotated", timeout=2, after=events)
        assert rotated["sha256"] == leaf_fingerprint(second)

        # 2. an invalid replacement is refused with its message; the current certificate stays
        events = len(router.process.events)
        cluster.replace("secrets", tls_secret(pki.pair(third, key=pki.server().key_pem()), ("tls.crt", "tls.key")))
        origin = f"sslSecret {SECRET} in namespace default"
        assert rejected(router, events) == [f"{origin}: tls.key: the private key does not match the certificate "
                                            f"(CN={CNAME}) in {origin}: tls.crt"]
        events = len(router.process.events)
        expired = pki.server(not_before=now() - 3 * DAY, not_after=now() - DAY)
        cluster.replace("secrets", tls_secret(pki.pair(expired)))
        assert rejected(router, events)[0].startswith(f"{origin}: cert.pem: certificate 1 (CN={CNAME}) expired on ")
        events = len(router.process.events)
        cluster.delete("secrets", SECRET)
        assert rejected(router, events)[0].startswith(f"{origin}: no such Secret")
        assert_still_served(router, pki, leaf_fingerprint(second))

        # 3. created again, valid: served
        cluster.create("secrets", tls_secret(pki.pair(third)))
        wait_until_served(router, pki, leaf_fingerprint(third))
        time.sleep(0.3)
    assert not traffic.failures, traffic.failures[:5]
    assert min(traffic.ok.values()) > 20, traffic.ok
    assert len(router.process.events_named("tls.rotated")) == 2


def refused(kubeconfig: Path) -> str:
    code, output = run_to_exit([*SERVE, "--kubeconfig", str(kubeconfig)], timeout=30)
    assert code == 2, output
    assert '"listening"' not in output
    return output


def test_a_missing_secret_stops_the_start_naming_it(cluster: FakeApiServer, kubeconfig: Path) -> None:
    output = refused(kubeconfig)
    assert f"sslSecret {SECRET} in namespace default: no such Secret" in output


def test_an_invalid_secret_stops_the_start_with_its_message(cluster: FakeApiServer, kubeconfig: Path,
                                                            pki: Pki) -> None:
    cluster.create("secrets", secret(SECRET, **{"tls.crt": pki.ca.cert_pem().decode()}))
    output = refused(kubeconfig)
    assert f"sslSecret {SECRET} in namespace default: needs the keys cert.pem and key.pem (or tls.crt and " \
           "tls.key); has tls.crt" in output
