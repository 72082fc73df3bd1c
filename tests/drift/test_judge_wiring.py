"""The daily job's verdicts against computations made here from the stored rows with
app/stats (each statistic there is tested against scipy in tests/stats): the frozen
reference, the band's p-value and edges, the CUSUM recurrence and the error budget."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.db import today_utc
from app.drift.schemas import DEFAULT_REFERENCE_DAYS, DEFAULT_WARMUP_DAYS
from app.models import Checkpoint, DailySignal, DriftJudgement, DriftReference
from app.stats.bands import (
    estimate_rate_reference,
    rate_normal_score,
    rate_predictive_band,
    rate_predictive_pvalue,
)
from app.stats.budget import DEFAULT_DAILY_ALPHA
from app.stats.continuous import estimate_mean_reference, log_moments, lognormal_quantile_signal
from app.stats.cusum import DEFAULT_HEADROOM, DEFAULT_K
from tests.drift.traffic import Segment, Shift, day_of_traffic, post_events, run_drift

Headers = dict[str, str]
SEGMENTS = (
    Segment("free", 500, ("/chat", "/search"), ("us", "eu"), 0.05),
    Segment("pro", 300, ("/chat",), ("eu",), 0.05),
)
STEADY = DEFAULT_WARMUP_DAYS + DEFAULT_REFERENCE_DAYS
SHIFTED = 6
TOTAL = STEADY + SHIFTED


def day_at(index: int) -> date:
    return today_utc() - timedelta(days=TOTAL - index)


def test_verdicts_match_the_statistics_on_the_stored_rows(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    shift = Shift("pro", "refusal", day_at(STEADY), 3.0, ramp_days=3)
    events = [
        e
        for index in range(TOTAL)
        for e in day_of_traffic(
            random.Random(index),
            day_at(index),
            "m",
            "v1",
            SEGMENTS,
            wobble=0.15,
            shifts=(shift,),
            seed=11,
        )
    ]
    post_events(client, auth, events)
    run_drift(client, auth, day_at(TOTAL - 1), TOTAL)

    with app.state.sessionmaker() as session:
        [reference] = session.scalars(select(DriftReference)).all()
        ref_days = [date.fromisoformat(d) for d in reference.days]
        assert ref_days == [day_at(i) for i in range(DEFAULT_WARMUP_DAYS, STEADY)]

        def stored(signal: str, dimension: str, value: str) -> dict[date, DailySignal]:
            return {
                r.day: r
                for r in session.scalars(
                    select(DailySignal).where(
                        DailySignal.signal == signal,
                        DailySignal.dimension == dimension,
                        DailySignal.value == value,
                    )
                )
            }

        # The frozen reference of the pro segment's refusal rate, recomputed from its rows.
        rows = stored("refusal_rate", "user_segment", "pro")
        num = np.array([[rows[d].numerator for d in ref_days]])
        den = np.array([[rows[d].denominator for d in ref_days]])
        expected = estimate_rate_reference(num, den)
        entry = reference.stats["refusal_rate|user_segment|pro"]
        assert entry[:3] == pytest.approx(
            [expected.center[0], expected.between_var[0], expected.center_var[0]], rel=1e-9
        )
        assert entry[3:] == [expected.days_used[0], expected.days_excluded[0]]

        verdicts = {
            j.day: j
            for j in session.scalars(
                select(DriftJudgement)
                .where(
                    DriftJudgement.signal == "refusal_rate",
                    DriftJudgement.dimension == "user_segment",
                    DriftJudgement.value == "pro",
                )
                .order_by(DriftJudgement.day)
            )
        }
        previous = 0.0
        for index in range(STEADY, TOTAL):
            day = day_at(index)
            verdict, row = verdicts[day], rows[day]
            x, n = round(row.numerator), row.denominator
            assert verdict.reference_version == reference.version
            assert verdict.pvalue == pytest.approx(
                float(rate_predictive_pvalue(x, n, expected)[0]), rel=1e-9
            )
            assert 0 < verdict.band_alpha < DEFAULT_DAILY_ALPHA
            low, high = rate_predictive_band(n, expected, verdict.band_alpha)
            assert (verdict.band_low, verdict.band_high) == pytest.approx(
                (float(low[0]), float(high[0]))
            )
            band_fired = verdict.pvalue < verdict.band_alpha
            assert band_fired == (x / n > verdict.band_high)
            # The CUSUM recurrence, from the previous day's stored statistic.
            z = float(rate_normal_score(x, n, expected)[0])
            assert verdict.score == pytest.approx(z, rel=1e-9)
            assert verdict.cusum_h is not None
            cap = verdict.cusum_h + DEFAULT_HEADROOM
            assert verdict.cusum == pytest.approx(min(cap, max(0.0, previous + z - DEFAULT_K)))
            cusum_fired = verdict.cusum > verdict.cusum_h
            assert verdict.rules == int(band_fired) + 2 * int(cusum_fired)
            previous = verdict.cusum
        assert any(v.rules for d, v in verdicts.items() if d >= day_at(STEADY))

        # Latency p95 of the whole population: the log-normal fit's reference and z-score.
        lat = stored("latency_p95", "all", "all")
        values, within = [], []
        for d in ref_days:
            extra = lat[d].extra or {}
            mean, var = log_moments(lat[d].denominator, extra["sum_log"], extra["sum_log_sq"])
            value, v = lognormal_quantile_signal("p95", lat[d].denominator, mean, var)
            values.append(float(value))
            within.append(float(v))
        expected_lat = estimate_mean_reference([values], [within])
        assert reference.stats["latency_p95|all|all"][:3] == pytest.approx(
            [
                expected_lat.center[0],
                expected_lat.between_var[0],
                expected_lat.center_var[0],
            ],
            rel=1e-9,
        )
        # No alert in the whole population's latency: nothing changed there.
        quiet = session.scalars(
            select(DriftJudgement).where(
                DriftJudgement.signal == "latency_p95", DriftJudgement.dimension == "all"
            )
        ).all()
        assert quiet and all(j.rules == 0 for j in quiet)


def test_the_checkpoint_with_the_most_calls_is_judged(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The champion took 1,000 calls (a tenth of them with should_refuse), a canary 300
    (none): the champion is the served checkpoint, whichever signal's denominator is smaller
    (under-refusal counts only the should-refuse calls: 100 against 300)."""
    day = today_utc() - timedelta(days=1)
    for version in ("champ", "canary"):
        client.post("/api/v1/checkpoints", json={"model": "m", "version": version}, headers=auth)
    start = datetime.combine(day, time(12), UTC)

    def call(trace: str, version: str, i: int, should_refuse: bool) -> dict[str, object]:
        return {
            "trace_id": trace,
            "timestamp": (start + timedelta(seconds=i)).isoformat(),
            "model": "m",
            "checkpoint_version": version,
            "refusal": i % 20 == 0,
            "should_refuse": should_refuse,
        }

    post_events(
        client,
        auth,
        [call(f"a{i}", "champ", i, i % 10 == 0) for i in range(1000)]
        + [call(f"b{i}", "canary", i, False) for i in range(300)],
    )
    run_drift(client, auth, day)
    with app.state.sessionmaker() as session:
        champion = session.scalar(select(Checkpoint.id).where(Checkpoint.version == "champ"))
        judged = set(session.scalars(select(DriftJudgement.checkpoint_id)))
    assert judged == {champion}
