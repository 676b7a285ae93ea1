"""`serve --kubernetes` on the command line: what it needs, and how it refuses."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.helpers import run_to_exit

SERVE = [sys.executable, "-m", "router.cli", "serve", "--allow-insecure-connections", "--host", "127.0.0.1",
         "--port", "0", "--admin-port", "0"]


def run(*args: str) -> tuple[int, str]:
    return run_to_exit([*SERVE, *args], timeout=30)


def test_a_file_and_a_cluster_are_two_sources_pick_one(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text("")
    code, output = run("--config", str(config), "--kubernetes")
    assert code == 2, output
    assert "serve needs one of --config FILE" in output and "or --kubernetes" in output


def test_a_kubeconfig_that_does_not_work_stops_the_start(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    code, output = run("--kubernetes", "--kubeconfig", str(missing))
    assert code == 2, output
    assert f"--kubeconfig {missing}: cannot connect to Kubernetes" in output
    assert '"event": "listening"' not in output


def test_outside_a_cluster_without_a_kubeconfig_it_says_so(tmp_path: Path) -> None:
    code, output = run("--kubernetes", "--namespace", "models")
    assert code == 2, output
    assert "in-cluster configuration (no --kubeconfig): cannot connect to Kubernetes" in output


def test_cluster_settings_are_checked_before_connecting(tmp_path: Path) -> None:
    code, output = run("--kubernetes", "--status-lease", "Router Lease")
    assert code == 2 and "--status-lease: expected a Kubernetes object name (a-z, 0-9, '-', '.'), got 'Router Lease'" \
        in output, output
    code, output = run("--kubernetes", "--watch-namespace", "Models")
    assert code == 2 and "--watch-namespace: expected a namespace name (a-z, 0-9, '-'), got 'Models'" in output, output
    code, output = run("--kubernetes", "--replica-address-family", "IPv5")
    assert code == 2 and "--replica-address-family: expected one of IPv4, IPv6, got 'IPv5'" in output, output
