"""The drift page (signals, bands, alerts, champion changes, calibration) and the alert pages."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import AfterValidator

from app.core.deps import LinksDep, SessionDep
from app.core.errors import Unprocessable
from app.core.schemas import nfc
from app.drift import alerts, references
from app.drift import figures as drift_figures
from app.drift import queries as drift_queries
from app.drift import signals as signals
from app.drift.schemas import AlertOut, RebaselineIn
from app.drift.settings import drift_settings
from app.ingest import queries as event_queries
from app.ingest.schemas import EventOut
from app.models.drift import AlertStatus, DriftReference
from app.models.project import Role
from app.registry import queries as registry_queries
from app.web import auth
from app.web.auth import ViewerDep
from app.web.figures import digits_apart
from app.web.rendering import (
    CsrfField,
    OptionalText,
    choice_filter,
    date_window,
    redirect,
    render,
    require_role,
    web_router,
)
from app.webhooks import queries as webhook_queries

router = web_router()
WEEKLY_AFTER_DAYS = 120


@router.get("/drift", response_class=HTMLResponse)
def drift_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    links: LinksDep,
    model: OptionalText = None,
    signal: Annotated[str, Query(max_length=64)] = "eval_fail_rate",
    dimension: Annotated[str, Query(max_length=100), AfterValidator(nfc)] = "all",
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    if signal not in signals.ALL_SIGNALS:
        raise Unprocessable(f"signal: one of {', '.join(signals.ALL_SIGNALS)}", field="signal")
    start, end = date_window(start, end, 45)
    models = registry_queries.model_names(session, project_id)
    model = model or (models[0] if models else None)

    # Beyond four months a chart of days is noise: weekly sums, without the daily band.
    weekly = (end - start).days > WEEKLY_AFTER_DAYS

    def series(signals: list[str], dimension: str) -> list[drift_queries.SignalPoint]:
        return drift_queries.signal_series(
            session,
            project_id,
            signals=signals,
            dimension=dimension,
            start=start,
            end=end,
            model=model,
            weekly=weekly,
        )

    points = series([signal], dimension)
    shown = [
        alerts.alert_out(a, links)
        for a in drift_queries.alerts(
            session,
            project_id,
            list(AlertStatus),
            model=model,
            signal=signal,
            dimension=dimension,
            start=start,
            end=end,
            limit=500,
        )
    ]
    changes = registry_queries.champion_changes(session, project_id, model, start, end)
    verdicts = (
        drift_queries.judgements(
            session,
            project_id,
            model=model,
            signal=signal,
            dimension=dimension,
            start=start,
            end=end,
        )
        if model and not weekly
        else []
    )
    frozen = drift_queries.references(session, project_id, model, start, end) if model else []
    spans = [_reference_span(r) for r in frozen if r.last_day >= start and r.first_day <= end]
    calibration = series(["brier_score", "ece"], "all")
    calibration_bins = (
        drift_queries.calibration_bins(
            session, project_id, model=model, dimension=dimension, start=start, end=end
        )
        if model
        else []
    )
    refusal = series(["over_refusal_rate", "under_refusal_rate"], "all")
    latency = series(["latency_p50", "latency_p95"], "all")
    tokens = series(["tokens_p50", "tokens_p95"], "all")
    cost = series(["cost_p50", "cost_p95"], "all")
    active = next((r for r in frozen if r.status == "active"), None)
    settings = drift_settings(session, project_id)
    context = {
        "viewer": viewer,
        "alert_numbers": drift_figures.alert_numbers,
        "models": models,
        "signals": [(s, signals.signal_label(s)) for s in signals.ALL_SIGNALS],
        "dimensions": drift_queries.signal_dimensions(session, project_id),
        "filters": {
            "model": model,
            "signal": signal,
            "dimension": dimension,
            "from": start.isoformat(),
            "to": end.isoformat(),
        },
        "alerts": shown,
        "weekly": weekly,
        "reference": None
        if active is None
        else {
            "version": active.version,
            "checkpoint": active.checkpoint.version,
            "first_day": active.first_day.isoformat(),
            "last_day": active.last_day.isoformat(),
            "days": len(active.days),
            "trigger": active.trigger.replace("_", " "),
            "reason": active.reason,
        },
        "unjudged": []
        if active is None
        else [
            c
            for c in references.waiting_cohorts(session, active, settings)
            if c.last_day >= start and c.first_day <= end
        ],
        "drift_settings": settings,
        "drift_figure": drift_figures.drift(
            points,
            signal,
            [_alert_mark(a) for a in shown],
            changes,
            bands=drift_figures.judged_bands(verdicts),
            references=spans,
        )
        if points
        else None,
        "cusum_figure": drift_figures.cusum(
            verdicts,
            signal,
            f"CUSUM of {signals.signal_label(signal)} against its threshold",
        )
        if verdicts
        else None,
        "calibration_figure": drift_figures.per_signal(
            calibration,
            "brier_score",
            changes,
            "Brier score and calibration error (lower is better)",
        )
        if calibration
        else None,
        "reliability_figure": drift_figures.reliability(
            calibration_bins,
            f"Reliability {'of all traffic' if dimension == 'all' else 'per ' + dimension}, "
            f"{start} to {end}",
        )
        if calibration_bins
        else None,
        "refusal_figure": drift_figures.per_signal(
            refusal, "refusal_rate", changes, "Over- and under-refusal"
        )
        if refusal
        else None,
        "latency_figure": drift_figures.per_signal(
            latency, "latency_p50", changes, "Latency p50 and p95 (ms)"
        )
        if latency
        else None,
        "tokens_figure": drift_figures.per_signal(
            tokens, "tokens_p50", changes, "Tokens per call, p50 and p95"
        )
        if tokens
        else None,
        "cost_figure": drift_figures.per_signal(
            cost, "cost_p50", changes, "Cost per call, p50 and p95 (USD, at checkpoint prices)"
        )
        if cost
        else None,
    }
    return render(request, "drift/drift.html", context)


def _reference_span(reference: DriftReference) -> drift_figures.ReferenceSpan:
    return drift_figures.ReferenceSpan(
        reference.first_day,
        reference.last_day,
        f"reference v{reference.version} ({reference.checkpoint.version})",
    )


def _alert_mark(alert: AlertOut) -> drift_figures.AlertMark:
    resolved = alert.last_day if alert.status == AlertStatus.resolved else None
    return drift_figures.AlertMark(alert.id, alert.value, alert.day, alert.observed, resolved)


def _evidence_rows(alert: AlertOut) -> list[tuple[str, str]]:
    """The alert's evidence as (label, text) rows for the alert page."""
    evidence = alert.evidence
    if not evidence:
        return []
    band, cusum, reference = evidence["band"], evidence["cusum"], evidence.get("reference")
    show = signals.format_value
    observed, low, high = drift_figures.alert_numbers(
        alert.signal, evidence["observed"], band["low"], band["high"]
    )
    rows = [
        ("Rules that fired", " and ".join(evidence["rules"]) or "none"),
        ("Judged day", str(evidence["day"])),
        ("Observed", observed),
        (
            "Band",
            f"{low} to {high} "
            f"({band['side']}, alpha = {band['alpha']:.2g}, p = {band['p_value']:.2g})"
            if band["p_value"] is not None
            else "not tested",
        ),
        ("CUSUM", _cusum_text(cusum)),
    ]
    if reference:
        rows.append(
            (
                "Reference",
                f"v{reference['version']}: {reference['checkpoint_version']}, "
                f"{reference['first_day']} to {reference['last_day']} ({reference['days']} days, "
                f"{reference['trigger'].replace('_', ' ')}), centre "
                f"{show(alert.signal, reference['center'])}",
            )
        )
        window = reference.get("cohort_window")
        if window:
            rows.append(
                (
                    "Cohort's own window",
                    f"{window['first_day']} to {window['last_day']} ({window['days']} "
                    f"known-good days), added to v{reference['version']} for days from "
                    f"{window['added_on']}",
                )
            )
    return rows


def _cusum_text(cusum: dict[str, Any]) -> str:
    """S against h and the release level, with decimals enough to read S apart from both."""
    statistic, threshold, release = cusum["statistic"], cusum["threshold"], cusum["release"]
    if threshold is None:
        return f"S = {statistic:.2f}"
    d = digits_apart(statistic, (threshold, release), 2, 6, "f")
    return (
        f"S = {statistic:.{d}f} against h = {threshold:.{d}f} "
        f"(back in control at ≤ {release:.{d}f})"
    )


@router.post("/drift/rebaseline")
def rebaseline(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    csrf_token: CsrfField,
    model: Annotated[str, Form(min_length=1, max_length=200)],
    reason: Annotated[str, Form(max_length=2000)] = "",
    accept_alert_days: Annotated[bool, Form()] = False,
) -> RedirectResponse:
    """The drift page's rebaseline button: the API's rebaseline, with the form's reason and
    whether alert days are accepted as the new normal."""
    auth.check_csrf(request, csrf_token)
    require_role(viewer, Role.write)
    body = RebaselineIn.model_validate({"reason": reason, "accept_alert_days": accept_alert_days})
    references.rebaseline(session, viewer.principal, model, body)
    return redirect("/drift?" + urlencode({"model": model}))


ALERTS_LISTED = 200
"""The newest alerts the alerts page lists; it says so when there are more."""


@router.get("/alerts", response_class=HTMLResponse)
def alerts_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    links: LinksDep,
    status: Annotated[str | None, Query(max_length=16)] = None,
    model: OptionalText = None,
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    chosen = choice_filter(AlertStatus, status, "status")
    model = model or None  # the form's "any"
    statuses = [chosen] if chosen else [AlertStatus.open, AlertStatus.acknowledged]
    listed = drift_queries.alerts(
        session, project_id, statuses, model=model, limit=ALERTS_LISTED + 1
    )
    context = {
        "viewer": viewer,
        "alert_numbers": drift_figures.alert_numbers,
        "alerts": [alerts.alert_out(a, links) for a in listed[:ALERTS_LISTED]],
        "more": len(listed) > ALERTS_LISTED,
        "counts": drift_queries.alert_counts(session, project_id, model),
        "models": registry_queries.model_names(session, project_id),
        "filters": {"status": chosen.value if chosen else None, "model": model},
        "statuses": [s.value for s in AlertStatus],
    }
    return render(request, "drift/alerts.html", context)


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert_page(
    request: Request, alert_id: int, viewer: ViewerDep, session: SessionDep, links: LinksDep
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    row = alerts.alert_out(alerts.get_alert(session, project_id, alert_id), links)
    start, end = row.day - timedelta(days=21), row.day + timedelta(days=7)
    points = drift_queries.signal_series(
        session,
        project_id,
        signals=[row.signal],
        dimension=row.dimension,
        start=start,
        end=end,
        model=row.model,
        value=row.value,
    )
    changes = registry_queries.champion_changes(session, project_id, row.model, start, end)
    sample_events, _ = event_queries.list_events(
        session,
        project_id,
        event_queries.EventFilters(trace_ids=tuple(row.sample_trace_ids[:20])),
        None,
        20,
    )
    samples = [EventOut.model_validate(event) for event in sample_events]
    verdicts = drift_queries.judgements(
        session,
        project_id,
        model=row.model,
        signal=row.signal,
        dimension=row.dimension,
        start=start,
        end=end,
    )
    verdicts = [v for v in verdicts if v.value == row.value]
    context = {
        "viewer": viewer,
        "alert": row,
        "numbers": dict(
            zip(
                ("observed", "band_low", "band_high"),
                drift_figures.alert_numbers(row.signal, row.observed, row.band.low, row.band.high),
                strict=True,
            ),
            baseline=signals.format_value(row.signal, row.baseline),
        ),
        "evidence": _evidence_rows(row),
        "samples": samples,
        "deliveries": webhook_queries.deliveries_for_alert(session, project_id, alert_id),
        "band_figure": drift_figures.drift(
            points,
            row.signal,
            [_alert_mark(row)],
            changes,
            f"{signals.signal_label(row.signal)} · {row.dimension}={row.value}",
            bands=drift_figures.judged_bands(verdicts),
        )
        if points
        else None,
        "cusum_figure": drift_figures.cusum(verdicts, row.signal, "CUSUM against its threshold")
        if verdicts
        else None,
    }
    return render(request, "drift/alert.html", context)


@router.post("/alerts/{alert_id}/ack")
def acknowledge_alert(
    request: Request, alert_id: int, viewer: ViewerDep, session: SessionDep, csrf_token: CsrfField
) -> RedirectResponse:
    auth.check_csrf(request, csrf_token)
    require_role(viewer, Role.write)
    alerts.acknowledge(session, viewer.principal, alert_id, "acknowledged on the dashboard")
    return redirect(f"/alerts/{alert_id}")


@router.post("/alerts/{alert_id}/resolve")
def resolve_alert(
    request: Request,
    alert_id: int,
    viewer: ViewerDep,
    session: SessionDep,
    links: LinksDep,
    csrf_token: CsrfField,
) -> RedirectResponse:
    auth.check_csrf(request, csrf_token)
    require_role(viewer, Role.write)
    alerts.resolve(session, viewer.principal, links, alert_id, "resolved on the dashboard")
    return redirect(f"/alerts/{alert_id}")
