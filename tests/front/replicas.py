"""Replicas on raw sockets for the data-plane tests: they answer as a test needs, and keep what they saw."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

from tests.helpers import BackgroundLoop

Answer = Callable[[bytes], bytes]  # a request's head -> the bytes to answer it with


def ok(head: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class RecordingReplica(BackgroundLoop):
    """A replica on loopback serving keep-alive connections, each in its own thread; it keeps each request
    head it reads (`heads`, and their first lines in `lines`) and counts connections. Each request is
    answered by `answer(head)`; with `answer_size`, by that many bytes instead, as fast as the router takes
    them. With `early`, a request is answered as soon as its head is read, and its body is read only
    `early` seconds later."""

    def __init__(self, answer: Answer = ok, *, answer_size: int = 0, early: float = 0.0, rcvbuf: int = 0) -> None:
        super().__init__()
        self.lines: list[bytes] = []
        self.heads: list[bytes] = []
        self.connections = 0
        self.answer, self.answer_size, self.early = answer, answer_size, early
        self.listener = socket.socket()
        if rcvbuf:  # accepted connections inherit it: the router's writes back up sooner
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.settimeout(0.2)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def __exit__(self, *exc: object) -> None:
        super().__exit__()
        self.listener.close()

    def _run(self) -> None:  # accepts connections, each served in a thread of its own
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        data = b""
        try:
            while not self._stop.is_set():
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                self.heads.append(head)
                self.lines.append(head.split(b"\r\n")[0])
                if self.early:
                    conn.sendall(self.answer(head))
                    time.sleep(self.early)
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]) \
                    if b"content-length: " in head.lower() else 0
                while len(data) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                data = data[length:]
                if self.early:
                    continue
                if self.answer_size:
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % self.answer_size)
                    block = b"z" * 65536
                    for _ in range(self.answer_size // len(block)):
                        conn.sendall(block)
                else:
                    conn.sendall(self.answer(head))
        except OSError:
            pass
        finally:
            conn.close()
