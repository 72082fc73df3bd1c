"""audit log: webhook URLs already recorded are redacted to their scheme and host

Before this revision the audit rows of webhook endpoints (`webhook.created`, `webhook.updated`
with a new url, `webhook.deleted`) kept the endpoint's whole URL in `details.url`, and
incoming-webhook URLs (Slack, PagerDuty, generic receivers) embed their secret token in the
path or query, some credentials before the host. The service now records the redacted URL
(scheme and host, then `/[redacted]`: app/core/redaction.py); this rewrites the rows stored
before it the same way. The redaction is repeated here, not imported, so this revision keeps
doing what it did whatever the app becomes; it is idempotent, so rows already redacted stay as
they are. Only rows whose target is a webhook are read (a few per endpoint).

Downgrade is a deliberate no-op: the secrets this removes are gone for good (that is the
point), so there is nothing to restore; the redacted rows stay valid under the older schema,
which is the same.

Revision ID: 0020
Revises: 0019
"""

from collections.abc import Sequence
from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# Column types are re-declared here, never imported from app.models.
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

URL_MASK = "[redacted]"

audit_log = sa.table(
    "audit_log",
    sa.column("id", sa.BigInteger()),
    sa.column("project_id", sa.Integer()),
    sa.column("target_type", sa.String()),
    sa.column("details", JSON),
)


def redacted_url(url: str) -> str:
    """Scheme and host, then the mask; the mask alone without a scheme or host (as
    app/core/redaction.redacted_url on the day of this revision)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return URL_MASK
    if not parts.scheme or not host:
        return URL_MASK
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{parts.scheme}://{host}/{URL_MASK}"


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(audit_log.c.id, audit_log.c.project_id, audit_log.c.details).where(
            audit_log.c.target_type == "webhook"
        )
    ).all()
    for row_id, project_id, details in rows:
        url = details.get("url") if isinstance(details, dict) else None
        if not isinstance(url, str) or redacted_url(url) == url:
            continue
        conn.execute(
            audit_log.update()
            .where(audit_log.c.project_id == project_id, audit_log.c.id == row_id)
            .values(details={**details, "url": redacted_url(url)})
        )


def downgrade() -> None:
    """Nothing to undo: the whole URLs (and the secrets in them) are not kept anywhere."""
