"""TLS connections count against --max-connections from accept, their handshake included (issue 20)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.routing import StartedModel, connect, exchange, status_of, wait_until
from tests.tls.conftest import config_for, start_tls_router
from tests.tls.pki import CNAME, Pki

REQUEST = (b"POST /api/v1/endpoint/demo/score HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer primary-key-0123456789\r\n"
           b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")


def test_handshakes_under_way_count_against_the_connection_limit(tmp_path: Path, pki: Pki,
                                                                model: StartedModel) -> None:
    cert, key = pki.write(tmp_path / "tls", pki.pair(pki.server()))
    router = start_tls_router(tmp_path, config_for(model), "--ssl-cert-pem-file", str(cert), "--ssl-key-pem-file",
                              str(key), "--ssl-cname", CNAME, "--allow-insecure-connections", "--port", "0",
                              "--max-connections", "3", "--max-connections-per-client", "10")
    assert router.port is not None
    try:
        silent = [connect(router.tls_port) for _ in range(3)]  # accepted, never a ClientHello
        time.sleep(0.3)  # (accepted by the router, not only by the kernel)
        answer = exchange(router.port, REQUEST, quiet_ok=True)
        assert status_of(answer) == 503 and b"too many open connections" in answer  # before: 200
        for sock in silent:  # handshakes that end without a connection free their place at once
            sock.close()

        def served() -> bool:
            return status_of(exchange(router.port, REQUEST, quiet_ok=True)) == 200

        wait_until(served, 5, "a plain request served once the handshakes are gone")
        with httpx.Client(verify=pki.client(), timeout=5) as client:  # a real handshake still works
            r = client.post(router.url(), content=b"{}", headers=router.auth)
        assert r.status_code == 200
    finally:
        router.process.stop()
