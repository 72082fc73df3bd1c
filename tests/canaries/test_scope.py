"""A canary routed to one segment: the candidate's events all come from that segment, the
champion's from every segment. Declared as the canary's `scope`, both arms are compared
within it (docs/statistics.md §12, "Canaries routed to one segment")."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.canaries.support import (
    Flags,
    candidate_and_champion,
    hours_ago,
    send,
    served,
    start_canary,
)
from tests.web.test_pages import sign_in

Headers = dict[str, str]
HOUR = timedelta(hours=1)
FREE = {"dimension": "user_segment", "value": "free"}


def segment(i: int) -> dict[str, str]:
    """Odd calls free, even ones paid; every fifth call of each on /billing."""
    return {
        "user_segment": "free" if i % 2 else "paid",
        "route": "/billing" if i % 10 < 2 else "/chat",
    }


def champion_refusals(i: int) -> dict[str, bool]:
    """The free tier is refused three times as often as the paid one: 30% against 10%."""
    return {"refusal": (i // 2) % 10 < (3 if i % 2 else 1)}


def free_only(i: int) -> dict[str, str]:
    return segment(2 * i + 1)


def as_the_champion(i: int) -> dict[str, bool]:
    """30% refused, as the champion refuses the free tier."""
    return {"refusal": i % 10 < 3}


def worse_on_billing(i: int) -> dict[str, bool]:
    """Half of the free calls refused, and every /billing one (i % 5 == 0): 60% in all."""
    return {"refusal": i % 10 < 5 or i % 5 == 0}


def segment_routed(client: TestClient, auth: Headers, candidate: Flags, **fields: Any) -> dict:
    """A canary of v2 started three hours ago, evaluated on two hours of traffic: the champion
    served 2,000 calls of both segments, v2 1,000 calls of the free tier alone, with the flags
    `candidate(i)`."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client, auth, ids["v2"], start=hours_ago(3).isoformat(), signals=["refusal_rate"], **fields
    )
    send(
        client,
        auth,
        served("v1", 2000, champion_refusals, hours_ago(2.5), 2 * HOUR, cohort=segment),
        served("v2", 1000, candidate, hours_ago(2.5), 2 * HOUR, cohort=free_only),
    )
    decided: dict = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    return decided


def rows(body: dict, value: str) -> dict:
    """The served comparison's row of the cohort `value`."""
    return next(
        c
        for c in body["evidence"]["comparisons"]
        if (c["comparison"], c["cohort"]["value"]) == ("served", value)
    )


def test_an_equal_candidate_serving_the_free_tier_alone_is_compared_within_it(
    client: TestClient, auth: Headers, admin_key: str
) -> None:
    """The reproduction: v2 refuses 30% of free calls, as the champion does; against the
    champion's whole population (20%) it read 10 points worse and rolled back. Scoped, both
    arms are the free tier's: 30% against 30%."""
    decided = segment_routed(client, auth, as_the_champion, scope=FREE)
    assert decided["status"] == "running", decided["evidence"]["reasons"]
    assert decided["scope"] == FREE
    assert decided["evidence"]["scope"] == FREE
    free = rows(decided, "free")
    assert free["cohort"] == FREE and free["scope"] == FREE
    assert free["candidate"] == {"events": 1000, "with_signal": 300, "rate": 0.3}
    assert free["champion"] == {"events": 1000, "with_signal": 300, "rate": 0.3}
    assert free["difference"] == 0.0 and free["verdict"] != "worse"
    assert decided["evidence"]["mix_differs"] == []  # within the scope the mix is one value
    sign_in(client, admin_key)
    page = client.get(f"/canaries/{decided['id']}")
    assert page.status_code == 200, page.text
    assert '<dd id="scope">user_segment=free:' in page.text
    assert "traffic; cohorts: user_segment=free</dd>" in page.text


def test_a_scoped_candidate_worse_within_its_scope_rolls_back_naming_it(
    client: TestClient, auth: Headers
) -> None:
    """60% of free calls refused against the champion's 30% there, every /billing one. A
    guarded route is judged within the scope: the champion's /billing calls of the paid tier
    are not its arm."""
    billing = {"dimension": "route", "value": "/billing"}
    decided = segment_routed(client, auth, worse_on_billing, scope=FREE, cohorts=[billing])
    assert decided["decision"] == "rollback", decided["evidence"]["reasons"]
    free = rows(decided, "free")
    assert free["champion"] == {"events": 1000, "with_signal": 300, "rate": 0.3}
    assert free["candidate"] == {"events": 1000, "with_signal": 600, "rate": 0.6}
    assert free["verdict"] == "worse"
    route = rows(decided, "/billing")
    assert route["scope"] == FREE
    assert route["champion"]["events"] == 200  # the free tier's 1 in 5, not both tiers' 400
    assert route["candidate"] == {"events": 200, "with_signal": 200, "rate": 1.0}
    assert decided["reason"].startswith("refusal_rate on user_segment=free (served): ")
    within = [r for r in decided["evidence"]["reasons"] if "/billing" in r]
    assert within and within[0].startswith(
        "refusal_rate on route=/billing within user_segment=free (served)"
    )


def test_the_scope_is_validated_like_a_cohort_and_normalised(
    client: TestClient, auth: Headers
) -> None:
    ids = candidate_and_champion(client, auth)
    url = "/api/v1/models/support-bot/canaries"

    def start(**fields: Any) -> Any:
        return client.post(url, json={"checkpoint_id": ids["v2"], **fields}, headers=auth)

    for scope in ({"dimension": "all", "value": "all"}, {"dimension": "region"}, "free"):
        refused = start(scope=scope)
        assert refused.status_code == 422, scope
        assert "scope" in refused.text
    same_dimension = start(scope=FREE, cohorts=[{"dimension": "user_segment", "value": "paid"}])
    assert same_dimension.status_code == 422 and "within the scope" in same_dimension.text
    # Decomposed as some clients send it; ingest stores every cohort value composed (NFC).
    cafe = {"dimension": "route", "value": "/cafe\u0301"}
    started = start(scope={"dimension": "region", "value": "Mu\u0308nchen"}, cohorts=[cafe])
    assert started.status_code == 201, started.text
    assert started.json()["scope"] == {"dimension": "region", "value": "M\u00fcnchen"}
    assert started.json()["cohorts"] == [{"dimension": "route", "value": "/caf\u00e9"}]


def test_unscoped_a_segment_routed_candidate_is_not_rolled_back_on_the_mix(
    client: TestClient, auth: Headers
) -> None:
    """The reproduction without a scope: the whole population's row is past the margin, but
    the arms serve different mixes of user_segment, so the canary says so and waits."""
    decided = segment_routed(client, auth, as_the_champion)
    assert decided["status"] == "running" and decided["decision"] is None
    everyone = rows(decided, "all")
    assert everyone["verdict"] == "worse"  # +0.10: the free tier's base rate, not v2's quality
    [mix] = decided["evidence"]["mix_differs"]
    assert mix["dimension"] == "user_segment" and mix["p_value"] < 1e-6
    assert (mix["candidate_traces"], mix["champion_traces"]) == (1000, 2000)
    shares = {s["value"]: (s["candidate"], s["champion"]) for s in mix["shares"]}
    assert shares == {"free": (1.0, 0.5), "paid": (0.0, 0.5)}
    reason = decided["evidence"]["reasons"][0]
    assert reason.startswith("inconclusive: mix differs on user_segment"), reason
    assert "declare scope" in reason and "refusal_rate on all=all (served)" in reason
    # The route mix is the same on both arms (one call in five on /billing): not listed.
    assert "route" not in [m["dimension"] for m in decided["evidence"]["mix_differs"]]


def test_unscoped_a_segment_routed_candidate_does_not_promote(
    client: TestClient, auth: Headers
) -> None:
    """Wide margins show the whole population non-inferior (+0.10 against 0.3); with the
    arms' mixes apart that says nothing of the candidate, so it does not promote."""
    decided = segment_routed(client, auth, as_the_champion, margin=0.3, min_hours=0)
    assert decided["status"] == "running", decided["evidence"]["reasons"]
    assert rows(decided, "all")["verdict"] == "non_inferior"
    assert decided["evidence"]["reasons"][0].startswith("inconclusive: mix differs on user_segment")
    assert decided["evidence"]["reasons"][-1].startswith("non-inferior on every measured")


def test_unscoped_a_segment_routed_candidate_rolls_back_within_a_guarded_segment(
    client: TestClient, auth: Headers
) -> None:
    """Guarding user_segment=free compares the free tier on both arms: unconfounded, so a
    candidate worse there rolls back, on that row only."""
    decided = segment_routed(client, auth, worse_on_billing, cohorts=[FREE])
    assert decided["decision"] == "rollback", decided["evidence"]["reasons"]
    assert [m["dimension"] for m in decided["evidence"]["mix_differs"]] == ["user_segment"]
    assert [r.split(":")[0] for r in decided["evidence"]["reasons"]] == [
        "refusal_rate on user_segment=free (served)"
    ]


def scoped_to_free(client: TestClient, auth: Headers) -> Any:
    """A refusal-rate canary of v2 scoped to the free tier, started three hours ago."""
    ids = candidate_and_champion(client, auth)
    return start_canary(
        client,
        auth,
        ids["v2"],
        start=hours_ago(3).isoformat(),
        signals=["refusal_rate"],
        scope=FREE,
    )


def paid_only(i: int) -> dict[str, str]:
    return segment(2 * i)


def test_a_scoped_canary_counts_and_names_the_candidates_calls_outside_its_scope(
    client: TestClient, auth: Headers, admin_key: str
) -> None:
    """Scoped to the free tier, v2 also served 400 paid calls (routing leaked): they were
    left out of every comparison and nothing said so. They still are (the scope's comparison
    is valid within it), and the evidence, the reasons and the page count them."""
    canary = scoped_to_free(client, auth)
    send(
        client,
        auth,
        served("v1", 2000, champion_refusals, hours_ago(2.5), 2 * HOUR, cohort=segment),
        served("v2", 1000, as_the_champion, hours_ago(2.5), 2 * HOUR, "f", cohort=free_only),
        served("v2", 400, as_the_champion, hours_ago(2.5), 2 * HOUR, "p", cohort=paid_only),
    )
    decided = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert rows(decided, "free")["candidate"]["events"] == 1000  # the comparison is the scope's
    assert decided["evidence"]["candidate_outside_scope"] == 400
    outside = [r for r in decided["evidence"]["reasons"] if "outside the scope" in r]
    assert outside and outside[0].startswith("the candidate served 400 calls outside the scope")
    sign_in(client, admin_key)
    page = client.get(f"/canaries/{canary['id']}").text
    assert 'id="outside-scope">400 calls of the candidate outside the scope' in page


def free_in(region: str) -> Any:
    def cohort(i: int) -> dict[str, str]:
        return {"user_segment": "free", "region": region}

    return cohort


def test_a_scoped_canary_routed_on_a_second_dimension_too_is_held_not_rolled_back(
    client: TestClient, auth: Headers
) -> None:
    """Scoped to the free tier, v2 is served to its eu users only (the team forgot the
    region), and eu free users are refused 30% of the time against 10% in the us. v2
    refuses eu users exactly as v1 does, but the scope's comparison read its 30% against v1's
    20% over both regions, and the equal candidate was rolled back. The mix check runs
    within the scope too: region differs, so the scope's rows are confounded and decide
    nothing (no promotion, no rollback on them)."""
    canary = scoped_to_free(client, auth)
    send(
        client,
        auth,
        served("v1", 1000, as_the_champion, hours_ago(2.5), 2 * HOUR, "a", cohort=free_in("eu")),
        served("v1", 1000, every_tenth, hours_ago(2.5), 2 * HOUR, "b", cohort=free_in("us")),
        served("v2", 1000, as_the_champion, hours_ago(2.5), 2 * HOUR, "c", cohort=free_in("eu")),
    )
    decided = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert decided["decision"] is None, decided["evidence"]["reasons"]
    assert [m["dimension"] for m in decided["evidence"]["mix_differs"]] == ["region"]
    assert decided["evidence"]["reasons"][0].startswith("inconclusive: mix differs on region")
    assert "narrow the scope" in decided["evidence"]["reasons"][0]
    free = rows(decided, "free")
    assert free["difference"] == pytest.approx(0.1)  # the scope's row: the regions' rates


def every_tenth(i: int) -> dict[str, bool]:
    return {"refusal": i % 10 == 0}
