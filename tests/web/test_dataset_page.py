"""The dataset page's diff counts every change, as the API's diff does, not the keys listed."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.datasets.pages import DIFF_KEYS
from tests.web.test_pages import sign_in


def rows(keys: range, answer: str) -> list[dict[str, str]]:
    return [{"key": f"k{i:04d}", "input": f"q{i}", "expected": answer} for i in keys]


def test_the_diff_counts_all_changes_beyond_the_keys_it_lists(
    client: TestClient, admin_key: str
) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    client.post("/api/v1/datasets", json={"name": "golden"}, headers=auth)
    first = rows(range(0, 700), "a")
    second = rows(range(0, 10), "b") + rows(range(10, 80), "a") + rows(range(700, 1300), "a")
    for body in (first, second):
        made = client.post("/api/v1/datasets/golden/versions", json={"rows": body}, headers=auth)
        assert made.status_code in (200, 201), made.text
    api = client.get(
        "/api/v1/datasets/golden/diff", params={"from": 1, "to": 2}, headers=auth
    ).json()
    assert api["counts"] == {"added": 600, "removed": 620, "changed": 10}
    assert api["counts"]["added"] > DIFF_KEYS  # more changes than the page lists
    sign_in(client, admin_key)

    page = client.get("/datasets/golden", params={"version": 2, "compare": 1})

    assert page.status_code == 200
    assert "600 added · 620 removed · 10 changed" in page.text
    assert f"the first {DIFF_KEYS} keys of each are listed" in page.text
