"""The README's examples, run as a reader runs them (issue 23: keep them true).

The fenced blocks of README.md, then of certs/README.md, that follow an `<!-- example ... -->` comment run in
document order in one bash (variables carry over, as in a terminal), in a fresh folder that links the
checkout's files, with the project's .venv first on PATH (as `. .venv/bin/activate` puts it):

- `<!-- example -->`: the block runs; a failing command fails the test (`set -e -o pipefail`).
- `<!-- example: prints "A" "B" -->`: the same, and its output must hold each string.
- `<!-- example: file NAME -->`: the block is the content of the file NAME.
- `<!-- example: in the background, ready on P ... [, prints "A"] -->`: the block runs as a server a reader
  starts in a second terminal; the next block waits until the ports P accept connections (and the output
  holds "A"). A later one on any of the same ports stops it first, as the reader's Ctrl-C would. Lines
  `export NAME=VALUE` it prints are exported to the shell, as the reader is told to paste them.

The README's well-known ports become free ports: in the blocks' text, and through ROUTER_PORT,
ROUTER_TLS_PORT and ROUTER_ADMIN_PORT for the commands that leave them at their defaults. Everything is bound
to loopback (ROUTER_HOST=127.0.0.1), bounded in time, and stopped at the end by process group.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT

DOCUMENTS = ("README.md", "certs/README.md")
PORTS = (8080, 8443, 9090, 5001, 5002, 5003)  # as the examples write them
MARKER = re.compile(r"<!--\s*example\b(?::\s*(?P<spec>.*?))?\s*-->")
BLOCK = re.compile(r"<!--\s*example\b(?::\s*(?P<spec>.*?))?\s*-->\n```[\w-]*\n(?P<body>.*?)\n```", re.DOTALL)
BLOCK_SECONDS = 60  # one block, or one server getting ready
STOP_SECONDS = 15


@dataclass(frozen=True)
class Example:
    where: str  # README.md:42
    body: str
    kind: str  # run, file, background
    target: str = ""  # file: its name
    ports: tuple[int, ...] = ()  # background: ready when these accept connections
    prints: tuple[str, ...] = ()


def parse(document: str) -> list[Example]:
    text = (PROJECT_ROOT / document).read_text(encoding="utf-8")
    examples = []
    for match in BLOCK.finditer(text):
        spec = (match["spec"] or "").strip()
        where = f"{document}:{text.count(chr(10), 0, match.start()) + 1}"
        prints = tuple(re.findall(r'"([^"]+)"', spec.partition("prints")[2]))
        if spec.startswith("file "):
            examples.append(Example(where, match["body"], "file", target=spec.removeprefix("file ").strip()))
        elif spec.startswith("in the background"):
            ready = re.search(r"ready on ([\d ]+)", spec)
            assert ready, f"{where}: a background example says which ports it is ready on"
            examples.append(Example(where, match["body"], "background",
                                    ports=tuple(int(p) for p in ready[1].split()), prints=prints))
        else:
            assert spec in ("",) or spec.startswith("prints"), f"{where}: unknown example marker {spec!r}"
            examples.append(Example(where, match["body"], "run", prints=prints))
    assert len(examples) == len(MARKER.findall(text)), f"{document}: a marker is not right before a ``` block"
    return examples


def free_ports(count: int) -> list[int]:
    """Ports free now, below the ephemeral range: the port-0 listeners of tests running meanwhile (this machine
    runs several suites at once) cannot take them before the examples' servers bind them, seconds later."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768
    found: list[int] = []
    for port in random.sample(range(max(1024, ephemeral - 12000), ephemeral), 200):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        found.append(port)
        if len(found) == count:
            return found
    raise AssertionError(f"no {count} free ports below {ephemeral}")


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop_group(proc: subprocess.Popen[str], ports: tuple[int, ...]) -> None:
    """SIGTERM to the process group we started, until its ports are free; SIGKILL after STOP_SECONDS."""
    for sig, seconds in ((signal.SIGTERM, STOP_SECONDS), (signal.SIGKILL, 5)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(accepts(port) for port in ports):
            time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(max(0.1, deadline - time.monotonic()))
        if proc.poll() is not None and not any(accepts(port) for port in ports):
            return


@dataclass
class Server:
    """A background example: its own process group, its output in a file."""

    example: Example
    ports: tuple[int, ...]
    log: Path
    proc: subprocess.Popen[str]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self) -> str | None:
        """None once ready, else why not."""
        deadline = time.monotonic() + BLOCK_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() not in (None, 0):
                return f"exited with code {self.proc.returncode}"
            output = self.output()
            if all(accepts(port) for port in self.ports) and all(text in output for text in self.example.prints):
                return None
            time.sleep(0.1)
        return f"not ready on {self.ports} (or did not print {self.example.prints}) within {BLOCK_SECONDS} s"

    def stop(self) -> None:
        _stop_group(self.proc, self.ports)


class Shell:
    """One bash fed one block after another, as a reader's terminal; a failing command ends it."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd, env=env,
                                     start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.send("set -e -o pipefail")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def run(self, script: Path) -> tuple[bool, str]:
        """Source `script`: (whether it ran to its end, its output)."""
        done = f"__example_done_{script.stem}__"
        self.send(f"source {shlex.quote(str(script))} < /dev/null; echo {done}")
        output: list[str] = []
        deadline = time.monotonic() + BLOCK_SECONDS
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return False, "".join(output) + f"\n(still running after {BLOCK_SECONDS} s)"
            if line is None:
                return False, "".join(output) + f"\n(the shell exited with code {self.proc.wait(5)})"
            if line.rstrip().endswith(done):  # after the block's last output, which may lack its newline
                return True, "".join(output) + line.rstrip().removesuffix(done)
            output.append(line)

    def close(self) -> None:
        _stop_group(self.proc, ())


@dataclass
class Reader:
    """Runs the examples in order, keeping the servers they start."""

    folder: Path
    scripts: Path
    mapping: dict[int, int]
    env: dict[str, str]
    shell: Shell
    servers: list[Server] = field(default_factory=list)

    def text(self, body: str) -> str:
        numbers = "|".join(map(str, self.mapping))
        return re.sub(rf"\b({numbers})\b", lambda m: str(self.mapping[int(m[1])]), body)

    def script(self, example: Example, number: int) -> Path:
        path = self.scripts / f"{number:02d}.sh"
        path.write_text(self.text(example.body) + "\n")
        return path

    def fail(self, example: Example, why: str) -> None:
        logs = "\n".join(f"--- {s.example.where} (background) ---\n{s.output()[-3000:]}" for s in self.servers)
        pytest.fail(f"{example.where}: {why}\n--- the example ---\n{example.body}\n{logs}", pytrace=False)

    def follow(self, example: Example, number: int) -> None:
        if example.kind == "file":
            (self.folder / example.target).write_text(self.text(example.body) + "\n")
        elif example.kind == "run":
            ok, output = self.shell.run(self.script(example, number))
            if not ok:
                self.fail(example, f"failed:\n{output}")
            missing = [text for text in example.prints if text not in output]
            if missing:
                self.fail(example, f"its output lacks {missing}:\n{output}")
        else:
            self.start(example, number)

    def start(self, example: Example, number: int) -> None:
        ports = tuple(self.mapping[port] for port in example.ports)
        for earlier in [s for s in self.servers if set(s.ports) & set(ports)]:
            earlier.stop()  # the reader's Ctrl-C before starting another server on those ports
            self.servers.remove(earlier)
        log = self.scripts / f"{number:02d}.log"
        with open(log, "w") as out:
            proc = subprocess.Popen(["bash", "-e", "-o", "pipefail", str(self.script(example, number))],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=self.folder,
                                    env=self.env, text=True, start_new_session=True)
        server = Server(example, ports, log, proc)
        self.servers.append(server)
        why = server.wait_ready()
        if why:
            self.fail(example, why)
        for name, value in re.findall(r"\bexport ([A-Z_][A-Z0-9_]*)=(\S+)", server.output()):
            self.shell.send(f"export {name}={shlex.quote(value)}")

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.shell.close()


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    folder, scripts = tmp_path / "checkout", tmp_path / "scripts"
    folder.mkdir()
    scripts.mkdir()
    for entry in PROJECT_ROOT.iterdir():  # the checkout, minus what the examples write
        if not entry.name.startswith(".") and entry.name not in ("certs", "resources.yaml"):
            (folder / entry.name).symlink_to(entry)
    mapping = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    env = {name: value for name, value in os.environ.items() if not name.startswith("ROUTER_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", PYTHONUNBUFFERED="1",
               VIRTUAL_ENV=str(Path(sys.executable).parent.parent), ROUTER_HOST="127.0.0.1",
               ROUTER_PORT=str(mapping[8080]), ROUTER_TLS_PORT=str(mapping[8443]),
               ROUTER_ADMIN_PORT=str(mapping[9090]))
    reader = Reader(folder, scripts, mapping, env, Shell(folder, env))
    try:
        yield reader
    finally:
        reader.close()


def test_every_document_has_examples_and_each_marker_a_block() -> None:
    for document in DOCUMENTS:
        kinds = {example.kind for example in parse(document)}
        assert kinds >= {"run", "background"}, f"{document}: {kinds}"


@pytest.mark.timeout(240)
def test_the_examples_work_as_written(reader: Reader) -> None:
    examples = [example for document in DOCUMENTS for example in parse(document)]
    for number, example in enumerate(examples):
        reader.follow(example, number)
