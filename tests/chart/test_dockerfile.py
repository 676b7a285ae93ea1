"""The Dockerfile the chart's image comes from: slim base, runtime dependencies only, non-root.

It cannot be built here; this reads it for the obvious mistakes, and checks it against
the chart (its user, ports and command).
"""

from __future__ import annotations

import re

import yaml

from tests.chart.render import CHART, NAME, render

ROOT = CHART.parents[1]


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_image_is_slim_python_and_runs_as_the_charts_non_root_user() -> None:
    steps = instructions()
    bases = [arg.split()[0] for op, arg in steps if op == "FROM"]
    assert bases and all(re.fullmatch(r"python:3\.11-slim(@sha256:[0-9a-f]{64})?", b) for b in bases), bases
    users = [arg for op, arg in steps if op == "USER"]
    final_stage = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]
    assert users and users[-1] in [arg for op, arg in final_stage if op == "USER"]
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0  # numeric: runAsNonRoot can check it
    pod = render({"inferenceRouterServiceType": "ClusterIP", "allowInsecureConnections": True})[
        ("Deployment", NAME)]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == int(uid)


def test_only_runtime_dependencies_are_installed() -> None:
    runs = " ".join(arg for op, arg in instructions() if op == "RUN")
    assert "[test]" not in runs and "[load]" not in runs and ".[" not in runs  # no extras
    assert "apt-get" not in runs  # no compilers: every dependency has a wheel
    pip_commands = re.findall(r"pip (?:install|wheel)[^&]*", runs)
    assert pip_commands and all("--no-cache-dir" in cmd for cmd in pip_commands)
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "*" in ignored and "!router/" in ignored  # tests, .venv and .git stay out of the context


def test_the_command_and_ports_are_the_charts() -> None:
    steps = dict(instructions())
    assert yaml.safe_load(steps["ENTRYPOINT"]) == ["inference-router"]
    assert yaml.safe_load(steps["CMD"]) == ["serve", "--kubernetes"]
    assert set(steps["EXPOSE"].split()) == {"8080", "8443", "9090"}
