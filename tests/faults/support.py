"""Real parts for fault tests: a TCP proxy in front of PostgreSQL that the test can cut and
restore (the shared server itself is never stopped), and an OpenAI-compatible endpoint whose
answers the test can hold back, to catch a run in the middle of its work."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from sqlalchemy.engine import make_url

from app.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]

Headers = dict[str, str]


class TcpProxy:
    """Forwards 127.0.0.1:<port> to `target`. `cut()` resets every open connection and
    closes new ones on accept, as a database that went away; `restore()` forwards again."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.forwarding = threading.Event()
        self.forwarding.set()
        self.closed = False
        self.sockets: set[socket.socket] = set()
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name="fault-proxy").start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.forwarding.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.sockets |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
        with self.lock:
            self.sockets.discard(sock)

    def cut(self) -> None:
        self.forwarding.clear()
        with self.lock:
            doomed = list(self.sockets)
        for sock in doomed:
            self._drop(sock)

    def restore(self) -> None:
        self.forwarding.set()

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


@contextmanager
def proxy_to(database_url: str) -> Iterator[TcpProxy]:
    url = make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    try:
        yield proxy
    finally:
        proxy.close()


def through(proxy: TcpProxy, database_url: str, application_name: str) -> str:
    """The same database, reached through the proxy, with a name pg_stat_activity shows."""
    url = make_url(database_url).set(host="127.0.0.1", port=proxy.port)
    url = url.update_query_dict({"application_name": application_name})
    return url.render_as_string(hide_password=False)


@dataclass
class GatedServer:
    """A real HTTP server on 127.0.0.1 that records each POST and answers it with `status`
    and `answer(body)`; while held, every request waits for `release()` (and sets `waiting`),
    like a model endpoint still thinking or a webhook receiver that hangs."""

    url: str = ""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answered: int = 0
    held: bool = False
    waiting: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)

    def hold(self) -> None:
        self.released.clear()
        self.waiting.clear()
        self.held = True

    def release(self) -> None:
        self.held = False
        self.released.set()


def chat_answer(body: bytes) -> bytes:
    """An OpenAI chat completion answering "answer to <last message>"."""
    prompt = json.loads(body)["messages"][-1]["content"]
    return json.dumps({"choices": [{"message": {"content": f"answer to {prompt}"}}]}).encode()


def chat_prompts(server: GatedServer) -> list[str]:
    return [json.loads(body)["messages"][-1]["content"] for _, body in server.requests]


@contextmanager
def gated_server(
    answer: Callable[[bytes], bytes] = lambda _body: b"ok", path: str = "/"
) -> Iterator[GatedServer]:
    state = GatedServer()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if state.held:
                state.waiting.set()
                state.released.wait(60)
            payload = answer(body)
            with lock:
                state.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            with suppress(BrokenPipeError, ConnectionResetError):  # the caller was killed
                self.send_response(state.status)
                for name, value in state.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            with lock:
                state.answered += 1

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}{path}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state
    finally:
        state.release()
        server.shutdown()
        server.server_close()


_WORKER_CODE = """
import sys, time
from app.core.db import make_engine, make_sessionmaker
from app.core.settings import Settings
from app.evaluations.worker import work_runs
from app.webhooks.sender import deliver_webhooks
work = {"runs": work_runs, "webhooks": deliver_webhooks}[sys.argv[1]]
settings = Settings()
sessions = make_sessionmaker(make_engine(settings))
while True:
    if not work(sessions, settings):
        time.sleep(0.1)
"""


def spawn_worker(loop: str, settings: Settings) -> subprocess.Popen[bytes]:
    """A separate process running one background loop ("runs" or "webhooks") forever, as a
    service replica would, against the test's database; the test kills it mid-work."""
    env = {
        **os.environ,
        "PLUMBLINE_DATABASE_URL": settings.database_url,
        "PLUMBLINE_SECRET_KEY": settings.secret_key or "",
        "PLUMBLINE_DATA_DIR": str(settings.data_dir),
        "PLUMBLINE_WEBHOOK_ALLOW_PRIVATE": str(settings.webhook_allow_private).lower(),
        "PLUMBLINE_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-c", _WORKER_CODE, loop], env=env, cwd=ROOT, stderr=subprocess.DEVNULL
    )


def kill(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL: no cleanup, no graceful shutdown, exactly what a crash leaves behind."""
    process.send_signal(signal.SIGKILL)
    process.wait(10)
