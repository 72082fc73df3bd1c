"""Every trace link on the pages opens its trace, whatever characters its id holds."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import quote

from fastapi.testclient import TestClient

from tests.web.test_pages import sign_in

TRACE_IDS = ["order/123", "a b?c#d", "naïve-ü"]


def traces_sent(client: TestClient, admin_key: str) -> dict[str, str]:
    """One call of each of TRACE_IDS, stored; the admin's headers."""
    auth = {"Authorization": f"Bearer {admin_key}"}
    client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    now = datetime.now(UTC).isoformat()
    events = [
        {"trace_id": t, "timestamp": now, "model": "m", "checkpoint_version": "v1"}
        for t in TRACE_IDS
    ]
    posted = client.post("/api/v1/events", json={"events": events}, headers=auth)
    assert posted.status_code == 202 and posted.json()["rejected"] == [], posted.text
    return auth


def test_the_traces_list_links_open_each_trace(client: TestClient, admin_key: str) -> None:
    traces_sent(client, admin_key)
    sign_in(client, admin_key)

    listing = client.get("/traces").text
    links = re.findall(r'href="(/traces/[^"?]+)"', listing)

    assert len(links) == len(TRACE_IDS)
    for link in links:
        page = client.get(link)
        assert page.status_code == 200, link
    shown = {re.search(r'<h1 class="mono break">(.*?)</h1>', client.get(x).text) for x in links}
    assert {m.group(1) for m in shown if m} == {t.replace("&", "&amp;") for t in TRACE_IDS}


def test_the_trace_api_answers_any_trace_id(client: TestClient, admin_key: str) -> None:
    """The API's trace route had the same one-segment parameter: `order/123` was a 404."""
    auth = traces_sent(client, admin_key)
    for trace_id in TRACE_IDS:
        answer = client.get(f"/api/v1/traces/{quote(trace_id, safe='')}", headers=auth)
        assert answer.status_code == 200, (trace_id, answer.text)
        assert answer.json()["trace_id"] == trace_id
