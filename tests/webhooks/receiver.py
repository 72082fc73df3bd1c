"""A real HTTP receiver on 127.0.0.1 for webhook tests: records every request and can refuse
the first attempts of each message, like a receiver that is briefly down."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Receiver:
    url: str
    fail_first: int = 0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    attempts_by_msg: dict[str, int] = field(default_factory=dict)


@contextmanager
def receiver(fail_first: int = 0) -> Iterator[Receiver]:
    state = Receiver(url="", fail_first=fail_first)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            msg_id = headers.get("webhook-id", "")
            with lock:
                seen = state.attempts_by_msg.get(msg_id, 0) + 1
                state.attempts_by_msg[msg_id] = seen
                failing = seen <= state.fail_first
                if not failing:
                    state.requests.append((headers, body))
            self.send_response(503 if failing else 200)
            self.send_header("content-type", "text/plain")
            self.end_headers()
            self.wfile.write(b"down for maintenance" if failing else b"ok")

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
