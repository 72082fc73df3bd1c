"""Claims on scheduled job periods: a period runs once however many processes schedule it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, utcnow


class JobRun(Base):
    __tablename__ = "job_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    job: Mapped[str] = mapped_column(String(64))
    period: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    # Runs of the period so far, and when a failed one may be claimed again (None: never).
    attempts: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    retry_at: Mapped[datetime | None]

    __table_args__ = (UniqueConstraint("job", "period"),)
