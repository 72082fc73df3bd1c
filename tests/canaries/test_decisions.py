"""Decisions on constructed traffic sent through the ingest API: a doubled refusal rate
rolls back, a regression confined to a declared cohort rolls back naming it, shadow answers
are paired with the served ones (and never count as served traffic), the deadline and a new
champion end a canary, and the background loop evaluates each due canary once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.canaries.service import SYSTEM_ACTOR, evaluate, evaluate_due_canaries, history
from app.core.db import utcnow
from app.core.links import Links
from app.core.settings import Settings
from app.models import AuditLog, Canary, Checkpoint
from app.models.registry import CheckpointStatus
from tests.canaries.support import (
    MODEL,
    candidate_and_champion,
    every,
    hours_ago,
    send,
    served,
    shadows,
    start_canary,
)
from tests.gates.support import add_run
from tests.web.test_pages import sign_in

Headers = dict[str, str]
HOUR = timedelta(hours=1)


def comparison(body: dict, kind: str, signal: str, value: str = "all") -> dict:
    return next(
        c
        for c in body["evidence"]["comparisons"]
        if (c["comparison"], c["signal"], c["cohort"]["value"]) == (kind, signal, value)
    )


def refusing_five_times_as_often(
    client: TestClient, auth: Headers, ids: dict[str, int]
) -> dict[str, Any]:
    """A canary of v2 started two hours ago; in the last 1.5 hours the champion refused 5% of
    1,800 calls and v2 25% of 200: enough to decide rollback at once."""
    canary = start_canary(client, auth, ids["v2"], start=hours_ago(2).isoformat())
    send(
        client,
        auth,
        served("v1", 1800, every(20, refusal=True), hours_ago(1.5), HOUR),
        served("v2", 200, every(4, refusal=True), hours_ago(1.5), HOUR),
    )
    return canary


def test_a_much_higher_refusal_rate_rolls_back_and_blocks_the_candidate(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    ids = candidate_and_champion(client, auth)
    canary = refusing_five_times_as_often(client, auth, ids)
    decided = client.get(f"/api/v1/canaries/{canary['id']}", headers=auth).json()
    assert (decided["status"], decided["decision"]) == ("rollback", "rollback")
    assert decided["ended_by"] == SYSTEM_ACTOR and decided["ended_at"] is not None
    refusal = comparison(decided, "served", "refusal_rate")
    assert refusal["candidate"] == {"events": 200, "with_signal": 50, "rate": 0.25}
    assert refusal["champion"] == {"events": 1800, "with_signal": 90, "rate": 0.05}
    assert refusal["verdict"] == "worse" and refusal["lower"] > 0.01
    assert decided["reason"].startswith("refusal_rate on all=all (served): the candidate is worse")
    assert decided["rollback"]["url"] == f"http://plumbline.test/canaries/{canary['id']}/rollback"
    # The evidence it was decided on is frozen: more traffic changes nothing.
    send(client, auth, served("v2", 200, every(20, refusal=True), hours_ago(1), HOUR, "late"))
    again = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert again["evidence"] == decided["evidence"]
    with app.state.sessionmaker() as session:
        assert session.get_one(Checkpoint, ids["v2"]).status is CheckpointStatus.blocked
        entry = session.scalars(select(AuditLog).where(AuditLog.action == "canary.decided")).one()
    assert entry.actor == SYSTEM_ACTOR and entry.details["decision"] == "rollback"
    assert entry.details["trigger"] == "read"


def passing_gate(client: TestClient, auth: Headers, ids: dict[str, int]) -> dict:
    """A gate of v2 against the champion v1 that passes: identical answers on 400 rows."""
    rows = [{"key": f"r{i}", "risk": "low", "cohort": {"route": "r"}} for i in range(400)]
    add_run(client, auth, ids["v1"], rows, {"exact_match": [1.0] * 400})
    candidate_run = add_run(client, auth, ids["v2"], rows, {"exact_match": [1.0] * 400})
    passed: dict = client.post(
        "/api/v1/gates", json={"candidate_run_id": candidate_run}, headers=auth
    ).json()
    assert passed["verdict"] == "pass"
    return passed


def test_a_rollback_decided_after_a_passing_gate_stops_promotion_with_that_gate(
    client: TestClient, auth: Headers
) -> None:
    """The newest evidence wins: the gate passed on the golden set, then the canary saw the
    candidate refuse five times as often on live traffic. Only a later passing gate (or
    force) promotes it now."""
    ids = candidate_and_champion(client, auth)
    passed = passing_gate(client, auth, ids)
    canary = refusing_five_times_as_often(client, auth, ids)
    assert client.get(f"/api/v1/canaries/{canary['id']}", headers=auth).json()["decision"] == (
        "rollback"
    )
    promoted = client.post(
        f"/api/v1/models/{MODEL}/promote",
        json={"checkpoint_id": ids["v2"], "gate_id": passed["id"]},
        headers=auth,
    )
    assert promoted.status_code == 409
    assert f"canary {canary['id']} decided rollback" in promoted.json()["detail"]


def test_a_rollback_by_hand_after_the_gate_stops_promotion_even_of_a_canary_stopped_before(
    client: TestClient, auth: Headers
) -> None:
    """Stopped before the gate, rolled back by hand after it: the rollback is the newer
    evidence, whatever the canary's earlier end."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(client, auth, ids["v2"])
    stop = {"reason": "pause"}
    assert client.post(f"/api/v1/canaries/{canary['id']}/stop", json=stop, headers=auth).is_success
    passed = passing_gate(client, auth, ids)
    back = {"reason": "live traffic looks bad"}
    rolled = client.post(f"/api/v1/canaries/{canary['id']}/rollback", json=back, headers=auth)
    assert rolled.status_code == 200 and rolled.json()["decision"] == "rollback"
    promoted = client.post(
        f"/api/v1/models/{MODEL}/promote",
        json={"checkpoint_id": ids["v2"], "gate_id": passed["id"]},
        headers=auth,
    )
    assert promoted.status_code == 409


def test_a_regression_confined_to_a_declared_cohort_rolls_back_naming_it(
    client: TestClient, auth: Headers
) -> None:
    ids = candidate_and_champion(client, auth)
    cohorts = [
        {"dimension": "region", "value": "apac"},
        {"dimension": "user_segment", "value": "pro"},
    ]
    canary = start_canary(
        client,
        auth,
        ids["v2"],
        start=hours_ago(3).isoformat(),
        cohorts=cohorts,
        signals=["refusal_rate"],
    )

    def region(i: int) -> dict[str, str]:
        return {
            "region": "apac" if i % 20 == 0 else "eu",
            "user_segment": "pro" if i % 4 == 0 else "free",
        }

    def champion(i: int) -> dict[str, bool]:
        return {"refusal": i % 20 == 1}  # 1 in 20, never in apac (every 20th call)

    def apac_refuses(i: int) -> dict[str, bool]:
        # apac: 3 of every 5 refused; elsewhere as the champion.
        return {"refusal": (i // 20) % 5 < 3 if i % 20 == 0 else i % 20 == 1}

    send(
        client,
        auth,
        served("v1", 2000, champion, hours_ago(2.5), 2 * HOUR, cohort=region),
        served("v2", 2000, apac_refuses, hours_ago(2.5), 2 * HOUR, cohort=region),
    )
    decided = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert decided["decision"] == "rollback", decided["evidence"]["reasons"]
    apac = comparison(decided, "served", "refusal_rate", "apac")
    assert apac["candidate"] == {"events": 100, "with_signal": 60, "rate": 0.6}
    assert apac["champion"] == {"events": 100, "with_signal": 0, "rate": 0.0}
    assert apac["verdict"] == "worse"
    everyone = comparison(decided, "served", "refusal_rate", "all")
    assert everyone["verdict"] != "worse"  # diluted below what the whole population shows
    assert decided["evidence"]["mix_differs"] == []  # both arms serve the same cohorts
    # Every apac call is also a pro call (i % 20 == 0 implies i % 4 == 0): pro is worse too.
    pro = comparison(decided, "served", "refusal_rate", "pro")
    assert pro["candidate"] == {"events": 500, "with_signal": 60, "rate": 0.12}
    assert pro["champion"] == {"events": 500, "with_signal": 0, "rate": 0.0}
    assert [r.split(":")[0] for r in decided["evidence"]["reasons"]] == [
        "refusal_rate on region=apac (served)",
        "refusal_rate on user_segment=pro (served)",
    ]


def test_shadow_answers_are_paired_with_the_served_ones_and_never_served_traffic(
    client: TestClient, auth: Headers
) -> None:
    ids = candidate_and_champion(client, auth)
    canary = start_canary(client, auth, ids["v2"], start=hours_ago(2).isoformat())
    send(
        client,
        auth,
        # The champion refuses 1 request in 50; the candidate, shadowing the same requests,
        # 1 in 5 (and every one the champion refused).
        served("v1", 500, every(50, refusal=True), hours_ago(1.5), HOUR, "req"),
        shadows("v2", "req", 500, every(5, refusal=True), hours_ago(1.5), HOUR),
    )
    decided = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert decided["decision"] == "rollback"
    paired = comparison(decided, "shadow", "refusal_rate")
    assert (paired["pairs"], paired["candidate_worse"], paired["candidate_better"]) == (500, 90, 0)
    assert paired["difference"] == 0.18 and paired["verdict"] == "worse"
    unpaired = comparison(decided, "served", "refusal_rate")
    assert unpaired["candidate"]["events"] == 0  # shadow answers are not served traffic
    assert unpaired["champion"] == {"events": 500, "with_signal": 10, "rate": 0.02}
    assert unpaired["verdict"] == "undecided"
    # Fallback was never recorded on either side: no pair, nothing to show.
    assert comparison(decided, "shadow", "fallback_rate")["verdict"] == "unmeasured"


def test_a_shadow_answer_pairs_with_the_served_call_of_the_canarys_window_not_an_older_one(
    client: TestClient, auth: Headers
) -> None:
    """The client reuses trace ids: a day before the canary, the champion served `req-0` ..
    `req-199` and refused them all; in the canary's window it serves them again, refusing none,
    and the candidate, shadowing those calls, refuses none either. Paired with every served
    call of the trace whatever its time, each pair read "only the champion refused": 200
    better, a difference of -1 from two checkpoints that answered alike."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client, auth, ids["v2"], start=hours_ago(2).isoformat(), signals=["refusal_rate"]
    )
    send(
        client,
        auth,
        served("v1", 200, every(1, refusal=True), hours_ago(30), HOUR, "req"),
        (
            event | {"span_id": "again"}
            for event in served("v1", 200, every(1, refusal=False), hours_ago(1.5), HOUR, "req")
        ),
        shadows("v2", "req", 200, every(1, refusal=False), hours_ago(1.5), HOUR),
    )
    evaluated = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    paired = comparison(evaluated, "shadow", "refusal_rate")
    assert (paired["pairs"], paired["candidate_worse"], paired["candidate_better"]) == (200, 0, 0)
    assert paired["difference"] == 0.0


def test_a_shadow_answer_pairs_call_to_call_and_a_trace_of_several_calls_is_left_out(
    client: TestClient, auth: Headers
) -> None:
    """200 one-call requests, answered alike by the champion and the candidate in shadow
    (1 in 5 refused on both sides), and 100 agent traces of three champion calls where only
    the third is refused; the candidate shadows the first call alone, and answers it as the
    champion did. Read trace against trace, the champion's side of those 100 held a refusal
    and the candidate's did not: 100 pairs "only the champion refused", a candidate better
    by a third than its equal. Which call a shadow answer replays is not recorded
    (`shadow_of` names the trace), so only traces of one call a side pair."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client, auth, ids["v2"], start=hours_ago(2).isoformat(), signals=["refusal_rate"]
    )
    agent_calls = (
        event | {"span_id": f"call-{call}", "refusal": call == 2}
        for call in range(3)
        for event in served("v1", 100, every(1), hours_ago(1.5), HOUR, "agent")
    )
    send(
        client,
        auth,
        served("v1", 200, every(5, refusal=True), hours_ago(1.5), HOUR, "req"),
        shadows("v2", "req", 200, every(5, refusal=True), hours_ago(1.5), HOUR),
        agent_calls,
        shadows("v2", "agent", 100, every(1, refusal=False), hours_ago(1.5), HOUR),
    )
    evaluated = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    paired = comparison(evaluated, "shadow", "refusal_rate")
    assert (paired["pairs"], paired["candidate_worse"], paired["candidate_better"]) == (200, 0, 0)
    assert paired["difference"] == 0.0
    assert evaluated["evidence"]["shadow_traces_left_out"] == 100


def test_the_deadline_ends_it_inconclusive_and_a_new_champion_ends_the_comparison(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    ids = candidate_and_champion(client, auth)
    first = start_canary(
        client, auth, ids["v2"], start=hours_ago(20).isoformat(), max_days=1, min_hours=0
    )
    send(
        client,
        auth,
        served("v1", 50, every(10, refusal=True), hours_ago(19), HOUR),
        served("v2", 50, every(10, refusal=True), hours_ago(19), HOUR),
    )
    with app.state.sessionmaker() as session:  # five hours from now: past the deadline
        row = session.scalars(select(Canary).where(Canary.id == first["id"])).one()
        evaluate(session, Links.of(settings), row, "test", now=utcnow() + 5 * HOUR)
    ended = client.get(f"/api/v1/canaries/{first['id']}", headers=auth).json()
    assert (ended["status"], ended["decision"]) == ("stopped", None)
    assert ended["reason"] == "inconclusive: no decision within max_days (1)"
    assert ended["evidence"]["hours"] == 24.0

    second = start_canary(client, auth, ids["v3"])
    client.post(
        f"/api/v1/models/{MODEL}/promote",
        json={"checkpoint_id": ids["v2"], "force": True, "reason": "hotfix"},
        headers=auth,
    ).raise_for_status()
    stopped = client.post(f"/api/v1/canaries/{second['id']}/evaluate", headers=auth).json()
    assert stopped["status"] == "stopped"
    assert stopped["reason"].startswith(f"the champion changed (now checkpoint {ids['v2']})")


def test_the_background_loop_evaluates_each_due_canary_once(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    ids = candidate_and_champion(client, auth)
    canary = start_canary(client, auth, ids["v2"])
    sessions = app.state.sessionmaker
    assert evaluate_due_canaries(sessions, settings) is True
    with sessions() as session:
        row = session.scalars(select(Canary).where(Canary.id == canary["id"])).one()
        assert row.evaluated_at is not None and row.evidence is not None
        assert row.next_evaluation_at > utcnow() + timedelta(seconds=250)
    assert evaluate_due_canaries(sessions, settings) is False  # not due for five minutes
    client.post(f"/api/v1/canaries/{canary['id']}/stop", json={"reason": "done"}, headers=auth)
    with sessions() as session:
        session.execute(update(Canary).values(next_evaluation_at=utcnow() - timedelta(hours=1)))
        session.commit()
    assert evaluate_due_canaries(sessions, settings) is False  # only running canaries are due


def test_min_hours_count_the_candidates_traffic_not_the_canarys_age(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    """A canary started 30 hours ago whose candidate took its first call two hours ago has
    seen two hours of the candidate, not a day: equal refusal rates on 2,000 calls show it
    non-inferior, and the promotion still waits until a day of its traffic has passed."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client,
        auth,
        ids["v2"],
        start=hours_ago(30).isoformat(),
        signals=["refusal_rate"],
        comparisons=["served"],
        margin=0.05,
    )
    send(
        client,
        auth,
        served("v1", 2000, every(20, refusal=True), hours_ago(29.5), 27 * HOUR, "day"),
        served("v1", 4000, every(20, refusal=True), hours_ago(2), 1.5 * HOUR),
        served("v2", 2000, every(20, refusal=True), hours_ago(2), 1.5 * HOUR),
    )
    waiting = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert (waiting["status"], waiting["decision"]) == ("running", None), waiting["reason"]
    assert comparison(waiting, "served", "refusal_rate")["verdict"] == "non_inferior"
    assert "promotion waits for 24 h of traffic (2.0 h so far)" in waiting["evidence"]["reasons"][0]
    with app.state.sessionmaker() as session:  # a day after the candidate's first call
        row = session.scalars(select(Canary).where(Canary.id == canary["id"])).one()
        evaluate(session, Links.of(settings), row, "test", now=utcnow() + 22.5 * HOUR)
    promoted = client.get(f"/api/v1/canaries/{canary['id']}", headers=auth).json()
    assert (promoted["status"], promoted["decision"]) == ("promote", "promote")


def test_the_champions_arm_starts_with_the_candidates_first_served_call(
    client: TestClient, auth: Headers
) -> None:
    """A canary started 30 hours ago whose candidate took calls only in the last six: the
    champion refused 2% of its calls over the first day and 10% over those six hours (harder
    evening traffic), the candidate refused 10% too. Compared with the champion's whole 30
    hours (3.6%) the candidate read worse by 6 points and was rolled back; compared with the
    champion's calls of the hours both served, it is as good."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client,
        auth,
        ids["v2"],
        start=hours_ago(30).isoformat(),
        signals=["refusal_rate"],
        comparisons=["served"],
    )
    send(
        client,
        auth,
        served("v1", 4800, every(50, refusal=True), hours_ago(30), 24 * HOUR, "day"),
        served("v1", 1200, every(10, refusal=True), hours_ago(6), 6 * HOUR, "evening"),
        served("v2", 400, every(10, refusal=True), hours_ago(6), 6 * HOUR),
    )
    body = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert (body["status"], body["decision"]) == ("running", None), body["reason"]
    refusal = comparison(body, "served", "refusal_rate")
    assert refusal["champion"] == {"events": 1200, "with_signal": 120, "rate": 0.1}
    assert refusal["candidate"] == {"events": 400, "with_signal": 40, "rate": 0.1}


def test_a_decided_canarys_chart_is_of_the_calls_its_decision_saw(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Calls that arrive after the decision, timestamped inside its window (a late export),
    change neither the frozen evidence nor the page's chart of it: the chart's last point is
    the bound the decision names, not a band that never crossed the margin."""
    ids = candidate_and_champion(client, auth)
    canary = refusing_five_times_as_often(client, auth, ids)
    decided = client.get(f"/api/v1/canaries/{canary['id']}", headers=auth).json()
    assert decided["decision"] == "rollback"
    send(client, auth, served("v2", 2000, every(50, refusal=True), hours_ago(1.4), HOUR, "late"))
    with app.state.sessionmaker() as session:
        row = session.scalars(select(Canary).where(Canary.id == canary["id"])).one()
        shown = history(session, row)
    served_bounds = shown.bounds[0]
    refusal = served_bounds.signals.index("refusal_rate")
    lower = float(served_bounds.lower[-1, 0, refusal])
    assert lower > 0.01
    assert abs(lower - comparison(decided, "served", "refusal_rate")["lower"]) < 1e-9


def test_a_decided_canarys_chart_ignores_late_calls_dated_before_its_window(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Calls received after the decision but dated in the day before the window (a late
    export of the same trace ids) made the chart leave out traces the decision counted: the
    received-by cut applied to the window's calls, not to the probe of traces begun before."""
    ids = candidate_and_champion(client, auth)
    canary = refusing_five_times_as_often(client, auth, ids)
    decided = client.get(f"/api/v1/canaries/{canary['id']}", headers=auth).json()
    assert decided["decision"] == "rollback"
    late = served("v2", 200, every(4, refusal=True), hours_ago(6), HOUR, "v2")
    send(client, auth, ({**event, "span_id": "earlier"} for event in late))
    with app.state.sessionmaker() as session:
        row = session.scalars(select(Canary).where(Canary.id == canary["id"])).one()
        shown = history(session, row)
    served_bounds = shown.bounds[0]
    refusal = served_bounds.signals.index("refusal_rate")
    lower = float(served_bounds.lower[-1, 0, refusal])
    assert abs(lower - comparison(decided, "served", "refusal_rate")["lower"]) < 1e-9, lower


def test_a_rollback_crossing_between_two_evaluations_is_acted_on(
    client: TestClient, auth: Headers
) -> None:
    """The candidate refused half of its first 150 calls (an hour) and none of the next
    1,500; the champion refused 5% of 3,000 calls throughout. The calls arrived after the
    last evaluation (an export delayed by hours), so no evaluation looked while the harm
    showed: by the next, the window's totals read 4.5% against 5% and the lower bound is
    below the margin. Before, that canary ran on as if nothing had happened. Every bound is
    a confidence sequence, valid at every moment of the window at once: the evaluation
    judges the window's history (the page's time buckets), so the crossing after the first
    hour of candidate traffic rolls back, its reason naming when; the evidence is still the
    window's totals."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client,
        auth,
        ids["v2"],
        start=hours_ago(6).isoformat(),
        signals=["refusal_rate"],
        comparisons=["served"],
    )
    path = f"/api/v1/canaries/{canary['id']}"
    first = client.post(f"{path}/evaluate", headers=auth).json()
    assert first["status"] == "running"
    send(
        client,
        auth,
        served("v1", 3000, every(20, refusal=True), hours_ago(5.5), 5.5 * HOUR),
        served("v2", 150, every(2, refusal=True), hours_ago(5.5), HOUR, "bad-hour"),
        served("v2", 1500, lambda _i: {"refusal": False}, hours_ago(4.5), 4.5 * HOUR, "after"),
    )
    decided = client.post(f"{path}/evaluate", headers=auth).json()
    refusal = comparison(decided, "served", "refusal_rate")
    assert refusal["candidate"] == {"events": 1650, "with_signal": 75, "rate": 75 / 1650}
    assert refusal["lower"] < 0.01 and refusal["verdict"] != "worse"
    assert (decided["status"], decided["decision"]) == ("rollback", "rollback"), decided
    assert decided["reason"].startswith("refusal_rate on all=all (served): the candidate was worse")
    assert "crossed at" in decided["reason"]


def test_sessions_begun_before_the_window_do_not_make_an_equal_candidate_look_worse(
    client: TestClient, auth: Headers
) -> None:
    """Sticky sessions: 400 conversations begun five hours before the canary stay on v1, and
    their later turns (7 each in the window) are never refused, while every new one-call
    trace is refused 10% of the time on either checkpoint (v2 gets every fifth). Counted,
    the old sessions put v1 at 3% against v2's 10%, and the equal v2 was rolled back (lower
    bound +0.016 > 0.01); only traces begun in the window compare the same kind of calls:
    10% and 10%."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client, auth, ids["v2"], start=hours_ago(5).isoformat(), signals=["refusal_rate"]
    )
    old: list[dict[str, Any]] = []
    opened = hours_ago(10)
    for t in range(400):
        for j in range(22):  # one turn every 20 minutes, the last 7 in the window
            old.append(
                {
                    "trace_id": f"session-{t}",
                    "span_id": f"turn-{j}",
                    "timestamp": (opened + timedelta(seconds=t, minutes=20 * j)).isoformat(),
                    "model": MODEL,
                    "checkpoint_version": "v1",
                    "refusal": False,
                }
            )
    since, span = hours_ago(4.9), timedelta(hours=4)
    new = [
        {
            "trace_id": f"new-{i}",
            "timestamp": (since + span * (i / 1500)).isoformat(),
            "model": MODEL,
            "checkpoint_version": "v2" if i % 5 == 0 else "v1",
            "refusal": (i // 5) % 10 == 0,
        }
        for i in range(1500)
    ]
    send(client, auth, iter(old), iter(new))
    decided = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert decided["decision"] is None, decided["evidence"]["reasons"]
    served_row = decided["evidence"]["comparisons"][0]
    assert served_row["candidate"] == {"events": 300, "with_signal": 30, "rate": 0.1}
    assert served_row["champion"] == {"events": 1200, "with_signal": 120, "rate": 0.1}


def test_trace_ids_reused_across_sessions_are_counted_when_left_out_and_told(
    client: TestClient, auth: Headers, admin_key: str
) -> None:
    """A client gives each user one trace id (`user-<i % 200>`), and the same 200 users were
    on v1 12 hours before the canary. Every call of theirs in the window is then of a trace
    'begun before' it and left out: v2 refusing 60% against v1's 30% over 1,000 / 2,000 calls
    read 0 events on both arms, no decision, "no guarded signal measured yet", and nothing
    said why. The comparison still leaves them out (a trace begun before may be a sticky
    session), but the evidence counts them per arm and the reason says plainly that most of
    the traffic was left out, naming the likely cause."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client, auth, ids["v2"], start=hours_ago(6).isoformat(), signals=["refusal_rate"]
    )
    before = [
        {
            "trace_id": f"user-{i}",
            "timestamp": hours_ago(18).isoformat(),
            "model": MODEL,
            "checkpoint_version": "v1",
            "refusal": False,
        }
        for i in range(200)
    ]
    since, span = hours_ago(5.5), timedelta(hours=5)

    def calls(version: str, count: int, every_refused: int, offset: int) -> list[dict[str, Any]]:
        return [
            {
                "trace_id": f"user-{i % 200}",
                "span_id": f"{version}-{i}",
                "timestamp": (since + span * (i / count)).isoformat(),
                "model": MODEL,
                "checkpoint_version": version,
                "refusal": (i + offset) % 10 < every_refused,
            }
            for i in range(count)
        ]

    send(client, auth, iter(before), iter(calls("v1", 2000, 3, 0)), iter(calls("v2", 1000, 6, 0)))
    decided = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    evidence = decided["evidence"]
    assert decided["decision"] is None and evidence["comparisons"][0]["candidate"]["events"] == 0
    assert evidence["begun_before"] == {
        "served_calls": 3000,
        "candidate_calls": 1000,
        "candidate_traces": 200,
        "champion_calls": 2000,
        "champion_traces": 200,
    }
    assert evidence["reasons"][0].startswith("3000 of 3000 served calls left out as traces")
    assert "trace ids reused across sessions" in evidence["reasons"][0], evidence["reasons"]
    assert evidence["reasons"][1] == "no guarded signal measured yet"
    sign_in(client, admin_key)
    page = client.get(f"/canaries/{canary['id']}").text
    assert 'id="begun-before">3000 of 3000 served calls' in page
