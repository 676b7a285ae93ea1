"""Certificate rotation under steady traffic: no failed request, new handshakes see the new certificate
within 2 s, connections already open carry on, an invalid replacement is refused and the old one stays."""

from __future__ import annotations

import base64
import http.client
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import yaml

from router.tls import PemPair
from tests.routing import StartedModel
from tests.tls.conftest import TlsRouter, config_for, start_tls_router
from tests.tls.pki import CNAME, DAY, Pki, fingerprint, leaf_fingerprint, now, served_fingerprint


class Traffic:
    """Clients in threads until stopped: one keep-alive connection, and a new connection per request."""

    def __init__(self, router: TlsRouter, pki: Pki) -> None:
        self.router, self.pki = router, pki
        self.ok = {"keep-alive": 0, "new-connection": 0}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(kind,), daemon=True) for kind in self.ok]

    def _run(self, kind: str) -> None:
        headers = {**self.router.auth, **({"Connection": "close"} if kind == "new-connection" else {})}
        with httpx.Client(verify=self.pki.client(), timeout=10, headers=headers) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(self.router.url(), content=b'{"data": [1]}')
                except httpx.HTTPError as exc:
                    self.failures.append(f"{kind}: {exc!r}")
                    continue
                if response.status_code == 200:
                    self.ok[kind] += 1
                else:
                    self.failures.append(f"{kind}: {response.status_code} {response.text}")

    @contextmanager
    def running(self) -> Iterator[Traffic]:
        for thread in self._threads:
            thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(timeout=15)


def wait_until_served(router: TlsRouter, pki: Pki, expected: str, within: float = 2.0) -> float:
    """Seconds until new handshakes present the certificate `expected` (fails after `within` s)."""
    started = time.monotonic()
    while (seen := served_fingerprint(router.tls_port, pki.client())) != expected:
        assert time.monotonic() - started < within, f"still serving {seen[:16]} after {within} s"
        time.sleep(0.02)
    return time.monotonic() - started


def assert_still_served(router: TlsRouter, pki: Pki, expected: str, seconds: float = 0.6) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert served_fingerprint(router.tls_port, pki.client()) == expected
        time.sleep(0.05)


def rejected(router: TlsRouter, after: int) -> list[str]:
    return router.process.wait_for_event("tls.rejected", timeout=5, after=after)["problems"]


def test_rotating_the_files_under_traffic(tmp_path: Path, pki: Pki, model: StartedModel) -> None:
    first, second, third = pki.server(), pki.server(), pki.server()
    cert, key = pki.write(tmp_path / "tls", pki.pair(first))
    router = start_tls_router(tmp_path, config_for(model), "--ssl-cert-pem-file", str(cert),
                              "--ssl-key-pem-file", str(key), "--ssl-cname", CNAME)
    try:
        assert served_fingerprint(router.tls_port, pki.client()) == leaf_fingerprint(first)
        opened = http.client.HTTPSConnection("127.0.0.1", router.tls_port, context=pki.client(), timeout=10)
        opened.request("POST", "/api/v1/endpoint/demo/score", body=b"{}", headers=router.auth)
        assert opened.getresponse().read() and opened.sock is not None
        socket_before = opened.sock

        with Traffic(router, pki).running() as traffic:
            time.sleep(0.3)
            # 1. replaced by rename, as Kubernetes and `certs dev` do
            events = len(router.process.events)
            pki.write(tmp_path / "tls", pki.pair(second))
            wait_until_served(router, pki, leaf_fingerprint(second))
            rotated = router.process.wait_for_event("tls.rotated", timeout=2, after=events)
            assert rotated["sha256"] == leaf_fingerprint(second) and rotated["subject"] == f"CN={CNAME}"

            # 2. the connection opened before goes on with the certificate it shook hands with
            opened.request("POST", "/api/v1/endpoint/demo/score", body=b"{}", headers=router.auth)
            assert opened.getresponse().status == 200
            assert opened.sock is socket_before
            assert fingerprint(opened.sock.getpeercert(binary_form=True)) == leaf_fingerprint(first)

            # 3. an invalid replacement is refused with its message; the current certificate stays
            events = len(router.process.events)
            pki.write(tmp_path / "tls", pki.pair(third, key=first.key_pem()))
            problems = rejected(router, events)
            assert problems == [f"sslKeyPemFile {key}: the private key does not match the certificate "
                                f"(CN={CNAME}) in sslCertPemFile {cert}"]
            events = len(router.process.events)
            pki.write(tmp_path / "tls", pki.pair(pki.server("other.test")))
            assert "sslCname 'router.test' is not covered" in rejected(router, events)[0]
            assert_still_served(router, pki, leaf_fingerprint(second))

            # 4. rewritten in place, the certificate first and the key a moment later (as `cp` would):
            # the half-replaced pair is refused, the complete one served
            pki.write(tmp_path / "tls", pki.pair(third), atomic=False, gap=0.5)
            wait_until_served(router, pki, leaf_fingerprint(third))
            time.sleep(0.3)
        assert not traffic.failures, traffic.failures[:5]
        assert traffic.ok["keep-alive"] > 20 and traffic.ok["new-connection"] > 20, traffic.ok
        opened.close()
    finally:
        assert router.process.stop() == 0
    assert len(router.process.events_named("tls.rotated")) == 2


def secret_config(model: StartedModel, pair: PemPair) -> str:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "router-tls"},
              "data": {"cert.pem": base64.b64encode(pair.cert).decode(),
                       "key.pem": base64.b64encode(pair.key).decode()}}
    return config_for(model).yaml() + "---\n" + yaml.safe_dump(secret)


def test_rotating_a_secret_in_the_config_file_under_traffic(tmp_path: Path, pki: Pki, model: StartedModel) -> None:
    first, second = pki.server(), pki.server()
    router = start_tls_router(tmp_path, secret_config(model, pki.pair(first)), "--ssl-secret", "router-tls")

    def write(text: str) -> None:
        (tmp_path / "next.yaml").write_text(text)
        (tmp_path / "next.yaml").replace(router.config_path)

    try:
        assert served_fingerprint(router.tls_port, pki.client()) == leaf_fingerprint(first)
        with Traffic(router, pki).running() as traffic:
            time.sleep(0.3)
            write(secret_config(model, pki.pair(second)))
            wait_until_served(router, pki, leaf_fingerprint(second))
            events = len(router.process.events)
            write(secret_config(model, pki.pair(pki.server(not_before=now() - 3 * DAY, not_after=now() - DAY))))
            problems = rejected(router, events)
            assert problems[0].startswith(f"sslSecret router-tls in {router.config_path}: cert.pem: certificate 1 "
                                          f"(CN={CNAME}) expired on ")
            assert_still_served(router, pki, leaf_fingerprint(second))
        assert not traffic.failures, traffic.failures[:5]
        assert min(traffic.ok.values()) > 10, traffic.ok
    finally:
        assert router.process.stop() == 0
