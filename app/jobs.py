"""Background work in the service process: polling loops over work rows in the database
(queued runs, due webhook deliveries) and the APScheduler cron jobs.

Each loop is a plain function `(sessionmaker, settings) -> bool` from app/services that does
one bounded batch and says whether it found work; the loop polls again at once when it did.
Work items are rows claimed in the database, so they survive restarts and several processes
can share them. Cron jobs claim their period in `job_runs` (see services/jobs_claim) so each
runs once per period however many processes schedule it."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from app.errors import database_unavailable
from app.services.runs import work_runs
from app.services.webhooks import deliver_webhooks
from app.settings import Settings

log = logging.getLogger("plumbline.jobs")

WorkFn = Callable[[sessionmaker[Session], Settings], bool]


@dataclass(frozen=True)
class Loop:
    name: str
    work: WorkFn


def registered_loops() -> list[Loop]:
    """The loops the service runs; each domain adds its own line here."""
    return [Loop("evaluation-runs", work_runs), Loop("webhook-deliveries", deliver_webhooks)]


class BackgroundWorkers:
    def __init__(self, sessions: sessionmaker[Session], settings: Settings) -> None:
        self.sessions = sessions
        self.settings = settings
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, loops: list[Loop]) -> None:
        for loop in loops:
            thread = threading.Thread(
                target=self._run, args=(loop,), name=f"plumbline-{loop.name}", daemon=True
            )
            thread.start()
            self.threads.append(thread)

    def _run(self, loop: Loop) -> None:
        while not self.stopping.is_set():
            try:
                found = loop.work(self.sessions, self.settings)
            except Exception as exc:
                if database_unavailable(exc):  # expected during an outage: no traceback spam
                    log.warning("background loop %s: database unavailable", loop.name)
                else:
                    log.exception("background loop %s failed; retrying", loop.name)
                found = False
            if not found:
                self.stopping.wait(self.settings.worker_poll_s)

    def stop(self, timeout_s: float = 20.0) -> None:
        """Graceful: each loop finishes its current batch (bounded work) before exiting."""
        self.stopping.set()
        for thread in self.threads:
            thread.join(timeout=timeout_s)
