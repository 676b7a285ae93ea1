"""`make testssl`: scan the router's TLS port with testssl.sh and fail on any old protocol or weak cipher.

It finds (or installs, as root with apt-get) testssl.sh, makes dev certificates with
`inference-router certs dev`, starts the router serving TLS on a free loopback port and
runs testssl.sh's protocol and cipher-category checks (about 20 s). It passes when
SSLv2, SSLv3, TLS 1.0 and 1.1 and every weak cipher category are "not offered", and
TLS 1.2, TLS 1.3 and strong (AEAD) ciphers are offered. tests/tls checks the same with
Python's ssl module on every test run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from harness import router_config, start

NOT_OFFERED = ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT",
               "cipherlist_LOW", "cipherlist_3DES_IDEA", "cipherlist_AVERAGE")  # AVERAGE: obsolete CBC ciphers
OFFERED = ("TLS1_2", "TLS1_3", "cipherlist_STRONG")


def find_testssl() -> str:
    found = shutil.which("testssl") or shutil.which("testssl.sh")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "testssl.sh"], check=True, env=env)
        found = shutil.which("testssl") or shutil.which("testssl.sh")
    if found is None:
        sys.exit("testssl: needs testssl.sh (apt-get install testssl.sh)")
    return found


def start_router(workdir: Path) -> tuple[subprocess.Popen[str], int]:
    command = [sys.executable, "-m", "router.cli"]
    subprocess.run([*command, "certs", "dev", "--cname", "router.test", "--out", str(workdir)], check=True,
                   stdout=subprocess.DEVNULL)
    (workdir / "router.yaml").write_text(router_config(["http://127.0.0.1:9"], "scan-key-0123456789",
                                                       endpoint="scan", deployment="blue"))
    router, ready = start([*command, "serve", "--config", str(workdir / "router.yaml"), "--host", "127.0.0.1",
                           "--tls-port", "0", "--admin-port", "0", "--ssl-cert-pem-file", str(workdir / "cert.pem"),
                           "--ssl-key-pem-file", str(workdir / "key.pem")], timeout=15)
    return router, int(ready["tls_port"])


def findings(report: Path) -> dict[str, str]:
    scan = json.loads(report.read_text())["scanResult"]
    return {item["id"]: item["finding"] for section in scan for value in section.values()
            if isinstance(value, list) for item in value}


def main() -> int:
    testssl = find_testssl()
    with tempfile.TemporaryDirectory(prefix="testssl-") as tmp:
        workdir = Path(tmp)
        router, port = start_router(workdir)
        try:
            report = workdir / "report.json"
            subprocess.run([testssl, "--quiet", "--color", "0", "--warnings", "off", "--protocols", "--std",
                            "--jsonfile-pretty", str(report), f"127.0.0.1:{port}"], check=False)
            found = findings(report)
        finally:
            os.kill(router.pid, signal.SIGTERM)
            router.wait(15)
    problems = [f"{name}: expected not offered, found {found.get(name)!r}" for name in NOT_OFFERED
                if not str(found.get(name, "")).startswith("not offered")]
    problems += [f"{name}: expected offered, found {found.get(name)!r}" for name in OFFERED
                 if not str(found.get(name, "")).startswith("offered")]
    print("\n".join(problems) if problems else "testssl: TLS 1.2 and 1.3 only, strong ciphers only: ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
