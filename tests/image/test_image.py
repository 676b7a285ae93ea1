"""The image `make image` builds, run with the chart's arguments and environment: a score call through
it, as its non-root user, the `helm test` pod's check, and a clean drain.

`make image` builds with podman (installed with apt-get when missing). `podman run` cannot run on the
project's machines (crun may not set rlimits there), so the image's root filesystem, which
`podman image mount` gives read-only, is run with chroot: as the image's user, with the image's
environment and entrypoint, and a fresh directory on /tmp as the chart's emptyDir, in a private mount
namespace that goes away with the process. The router discovers its model from the fake API server
through a kubeconfig (the in-cluster configuration needs HTTPS). What this does not prove: the
runtime's own isolation (namespaces, seccomp, cgroups), the in-cluster service account, and pulling
the image from a registry.

Cold (no base image, no cached base tarball) this takes about two minutes, mostly making the base
from Debian's packages; warm (the base in podman's storage, the layers cached) about half a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.chart.render import NAME, render
from tests.helpers import PROJECT_ROOT, ManagedProcess, start_process
from tests.kube.cluster import seed_demo
from tests.kube.fake_apiserver import FakeApiServer
from tests.routing import wait_until

KEY = "primary-key-0123456789"
BUILD_TIMEOUT = 900


def why_not() -> str | None:
    """Why the image cannot be built and run here, or None."""
    if not sys.platform.startswith("linux"):
        return "the image is built with podman and run with chroot: Linux only"
    if os.geteuid() != 0:
        return "running the image's root filesystem needs root (podman image mount, chroot, mount)"
    if not shutil.which("podman") and not shutil.which("apt-get"):
        return "podman is missing and cannot be installed here without apt-get"
    if not shutil.which("unshare") or not shutil.which("chroot"):
        return "needs unshare and chroot (util-linux, coreutils)"
    return None


@dataclass(frozen=True)
class Image:
    name: str
    root: Path  # its root filesystem, mounted read-only
    config: dict[str, object]  # the image's Config: User, Env, Entrypoint, Cmd

    @property
    def user(self) -> str:
        return str(self.config["User"])

    def command(self, tmp: Path, env: dict[str, str], *args: str, entrypoint: list[str] | None = None) -> list[str]:
        """Run the image's entrypoint (or a pod's `command`) with `args` as the image would: its user, its
        environment and `env`, its root filesystem read-only and `tmp` on /tmp."""
        if entrypoint is None:
            entrypoint = [str(part) for part in self.config["Entrypoint"]]  # type: ignore[attr-defined]
        environment = [str(item) for item in self.config["Env"]]  # type: ignore[attr-defined]
        environment += [f"{name}={value}" for name, value in env.items()]
        script = 'mount --bind "$1" "$2/tmp" && root=$2 && shift 2 && exec chroot --userspec="$USERSPEC" "$root" "$@"'
        return ["env", f"USERSPEC={self.user}", "unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", script, "sh", str(tmp), str(self.root), "env", "-i", *environment, *entrypoint, *args]


@pytest.fixture(scope="module")
def image() -> Iterator[Image]:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    name = subprocess.run(["make", "-s", "image-name"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    built = subprocess.run(["make", "image"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                           timeout=BUILD_TIMEOUT)
    assert built.returncode == 0, f"make image failed:\n{built.stdout[-3000:]}\n{built.stderr[-3000:]}"
    (inspected,) = json.loads(subprocess.run(["podman", "image", "inspect", name], capture_output=True, text=True,
                                             check=True).stdout)
    root = Path(subprocess.run(["podman", "image", "mount", name], capture_output=True, text=True,
                               check=True).stdout.strip())
    try:
        yield Image(name, root, inspected["Config"])
    finally:
        subprocess.run(["podman", "image", "unmount", name], capture_output=True, check=False)


def chart_image() -> str:
    chart = PROJECT_ROOT / "manifests" / "chart"
    values = yaml.safe_load((chart / "values.yaml").read_text())["image"]
    return f"{values['repository']}:{values['tag'] or yaml.safe_load((chart / 'Chart.yaml').read_text())['appVersion']}"


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


@pytest.mark.timeout(BUILD_TIMEOUT + 60)
def test_the_image_is_the_charts_and_runs_as_a_non_root_user_that_owns_none_of_its_files(image: Image) -> None:
    assert image.name == chart_image()
    assert image.config["Entrypoint"] == ["inference-router"] and image.config["Cmd"] == ["serve", "--kubernetes"]
    uid, _, gid = image.user.partition(":")
    assert int(uid) != 0 and int(gid) != 0
    passwd = {line.split(":")[2]: line.split(":")[0] for line in (image.root / "etc/passwd").read_text().splitlines()}
    assert passwd[uid] == "router"
    checked = 0
    for path in [image.root / "opt/inference-router", *(image.root / "opt/inference-router").rglob("*")]:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        assert info.st_uid == 0 and not info.st_mode & stat.S_IWOTH, f"{path} can be changed by the router"
        checked += 1
    assert checked > 1000  # the venv and every dependency, compiled
    mounted = [line.split() for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    assert "ro" in next(fields[5] for fields in mounted if fields[4] == str(image.root)).split(",")
    assert not list((image.root / "opt/inference-router").rglob("pip"))  # no installer left in the image


def helm_test_command() -> list[str]:
    """The `helm test` pod's command (its last item the admin Service's /readyz URL)."""
    objects = render({"inferenceRouterServiceType": "ClusterIP", "allowInsecureConnections": True})
    (pod,) = [obj for (kind, _), obj in objects.items() if kind == "Pod"]
    return [str(part) for part in pod["spec"]["containers"][0]["command"]]


def chart_container() -> tuple[list[str], dict[str, str]]:
    """The router container's arguments and environment as the chart renders them (plain HTTP, a short drain,
    one replica: the peers' key is a Secret volume this test has no pod for)."""
    objects = render({"inferenceRouterServiceType": "ClusterIP", "allowInsecureConnections": True,
                      "inferenceLoadBalancerHA": False,
                      "drain": {"preStopSeconds": 0, "delaySeconds": 1, "timeoutSeconds": 20}})
    (router,) = objects[("Deployment", NAME)]["spec"]["template"]["spec"]["containers"]
    return router["args"], {e["name"]: e["value"] for e in router["env"] if "value" in e}


@pytest.mark.timeout(BUILD_TIMEOUT + 120)
def test_the_charts_command_in_the_image_serves_a_score_call_as_non_root_and_sigterm_drains_and_exits_0(
        image: Image, tmp_path: Path) -> None:
    tmp_path.chmod(0o1777)  # the image's /tmp, as the chart's emptyDir: writable by the router's user
    model = start_process(image.command(tmp_path, {}, "sample-model", "--port", "0", "--name", "image-model"),
                          timeout=60)
    router: ManagedProcess | None = None
    with FakeApiServer(bookmark_interval=0.5) as api:
        try:
            seed_demo(api, KEY, model.ready["port"])
            api.kubeconfig(tmp_path / "kubeconfig")
            args, env = chart_container()
            assert args == ["serve", "--kubernetes"]
            # The pod's network is not ours: loopback and ephemeral ports instead of the pod IP and 8080/9090;
            # the in-cluster API server needs HTTPS, which the fake one does not speak: a kubeconfig instead;
            # the model replica is on loopback too, which a router admits only when told.
            env |= {"ROUTER_HOST": "127.0.0.1", "ROUTER_PORT": "0", "ROUTER_ADMIN_PORT": "0",
                    "ROUTER_ADMIN_HOST": "127.0.0.1", "POD_NAMESPACE": "default",
                    "ROUTER_ALLOW_LOOPBACK_REPLICAS": "true"}
            router = start_process(image.command(tmp_path, env, *args, "--kubeconfig", "/tmp/kubeconfig"),
                                   timeout=60)
            for process in (model, router):
                seen = status(process.pid)
                assert seen["Uid"].split() == [image.user.split(":")[0]] * 4, seen["Uid"]
                assert seen["Gid"].split() == [image.user.split(":")[1]] * 4, seen["Gid"]
                assert int(seen["CapEff"], 16) == 0  # no capability left
                assert os.readlink(f"/proc/{process.pid}/root") == str(image.root)
            admin = f"http://127.0.0.1:{router.ready['admin_port']}"
            wait_until(lambda: httpx.get(f"{admin}/readyz").status_code == 200, 20, "/readyz answers 200")
            helm_test = image.command(tmp_path, {}, f"{admin}/readyz", entrypoint=helm_test_command()[:-1])
            checked = subprocess.run(helm_test, capture_output=True, text=True, timeout=60)
            assert checked.returncode == 0 and " 200 " in checked.stdout, checked.stdout + checked.stderr

            url = f"http://127.0.0.1:{router.ready['port']}/api/v1/endpoint/demo/score"
            auth = {"Authorization": f"Bearer {KEY}"}
            answer = httpx.post(url, headers=auth, json={"data": [1, 2]}, timeout=10)
            assert answer.status_code == 200, answer.text
            assert answer.headers["azureml-model-deployment"] == "blue"
            assert answer.json()["name"] == "image-model"

            slow: list[httpx.Response] = []
            in_flight = threading.Thread(target=lambda: slow.append(
                httpx.post(url + "?latency_ms=1500", headers=auth, json={}, timeout=15)))
            in_flight.start()
            model_url = f"http://127.0.0.1:{model.ready['port']}"
            wait_until(lambda: httpx.get(f"{model_url}/stats").json()["in_flight"] == 1, 10,
                       "the slow request at the model")
            os.kill(router.pid, signal.SIGTERM)
            assert router.wait(timeout=30) == 0, router.output()
            in_flight.join(10)
            assert [r.status_code for r in slow] == [200]
            assert "Traceback" not in router.output()
        finally:
            if router is not None:
                router.stop()
            model.stop()
