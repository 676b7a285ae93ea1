"""The Dockerfile the chart's image comes from: slim base, runtime dependencies only, non-root.

This reads it for the obvious mistakes, and checks it against the chart (its user, ports, command
and image name); tests/image/test_image.py builds and runs it.
"""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.chart.render import CHART, NAME, render

ROOT = CHART.parents[1]


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_the_image_is_slim_python_and_runs_as_the_charts_non_root_user() -> None:
    steps = instructions()
    (default_base,) = [arg.split("=", 1)[1] for op, arg in steps if op == "ARG" and arg.startswith("BASE=")]
    assert re.fullmatch(r"python:3\.11-slim(@sha256:[0-9a-f]{64})?", default_base), default_base
    assert steps.index(("ARG", f"BASE={default_base}")) == 0  # before any FROM: every stage may use it
    bases = [arg.split()[0] for op, arg in steps if op == "FROM"]
    assert bases == ["${BASE}", "${BASE}"]  # the build stage's venv runs on the same Python
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
    pip_commands = re.findall(r"pip install[^&]*", runs)
    # from the wheels `make image` built, with no index: the build needs no network
    assert pip_commands and all("--no-cache-dir" in cmd and "--no-index" in cmd for cmd in pip_commands)
    assert "pip uninstall --yes pip setuptools" in runs  # no installer in the image
    ignored = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if not line.startswith("#")]
    assert ignored == ["*", "!build/wheelhouse/"]  # tests, .venv, .git and the sources stay out of the context


def test_the_command_and_ports_are_the_charts() -> None:
    steps = dict(instructions())
    assert yaml.safe_load(steps["ENTRYPOINT"]) == ["inference-router"]
    assert yaml.safe_load(steps["CMD"]) == ["serve", "--kubernetes"]
    assert set(steps["EXPOSE"].split()) == {"8080", "8443", "9090"}


def test_make_image_tags_the_charts_default_image() -> None:
    made = subprocess.run(["make", "-s", "image-name"], cwd=ROOT, capture_output=True, text=True, check=True)
    image = yaml.safe_load((CHART / "values.yaml").read_text())["image"]
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert made.stdout.strip() == f"{image['repository']}:{image['tag'] or app_version}"
    pod = render({"inferenceRouterServiceType": "ClusterIP", "allowInsecureConnections": True})[
        ("Deployment", NAME)]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == made.stdout.strip()
