"""Dashboard pages: parse the query, call query functions, build figures, render. No SQL here."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import StringConstraints

from app.api.deps import SessionDep
from app.errors import Forbidden, NotFound, Unauthorized, Unprocessable
from app.models.drift import AlertStatus
from app.models.project import Role
from app.ratelimit import RateLimited, enforce
from app.services import alerts, gates, keys, registry, webhooks
from app.web import auth, figures, queries
from app.web.auth import ViewerDep
from app.web.rendering import redirect, render, safe_next, web_router

router = web_router()

Text = Annotated[str, StringConstraints(max_length=200)]
OptionalText = Annotated[str | None, Query(max_length=200)]
CsrfField = Annotated[str, Form(max_length=200)]
PAGE_SIZE = 50
WEEKLY_AFTER_DAYS = 120


def _window(start: date | None, end: date | None, default_days: int) -> tuple[date, date]:
    end = end or datetime.now(UTC).date()
    start = start or end - timedelta(days=default_days - 1)
    if start > end:
        raise Unprocessable("from: the start of the range is after its end", field="from")
    if (end - start).days > 731:
        raise Unprocessable("from: at most two years at a time", field="from")
    return start, end


def _require(viewer: auth.Viewer, role: Role) -> None:
    if not viewer.can(role):
        raise Forbidden(f"this needs a '{role}' key; you signed in with '{viewer.principal.role}'")


# --- sign in, sign out, switch project ------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: OptionalText = None) -> HTMLResponse:
    return render(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/login", response_model=None)
def login(
    request: Request,
    session: SessionDep,
    csrf_token: CsrfField,
    api_key: Annotated[str, Form(max_length=200)],
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> HTMLResponse | RedirectResponse:
    auth.check_csrf(request, csrf_token)
    try:
        client_ip = request.client.host if request.client else "unknown"
        limit = request.app.state.settings.login_rate_per_minute
        enforce(request.app, "logins", limit, client_ip, "sign-in attempts from this address")
        principal = keys.authenticate(session, api_key.strip())
    except (RateLimited, Unauthorized) as failed:
        context = {"next": safe_next(next), "error": failed.detail}
        page = render(request, "login.html", context, status_code=failed.status)
        page.headers.update(failed.extra.get("headers") or {})
        return page
    assert principal.key_id is not None
    auth.sign_in(request, principal.key_id)
    return redirect(safe_next(next))


@router.post("/logout")
def logout(request: Request, csrf_token: CsrfField) -> RedirectResponse:
    auth.check_csrf(request, csrf_token)
    auth.clear_session(request)
    return redirect("/login")


@router.post("/switch-project")
def switch_project(
    request: Request, viewer: ViewerDep, csrf_token: CsrfField, key_id: Annotated[int, Form()]
) -> RedirectResponse:
    auth.check_csrf(request, csrf_token)
    auth.switch_to(request, key_id)
    return redirect("/")


# --- overview, models, checkpoints ----------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, viewer: ViewerDep, session: SessionDep) -> HTMLResponse:
    project_id = viewer.principal.project_id
    start, end = _window(None, None, 30)
    points = queries.signal_series(
        session, project_id, signals=queries.SEED_SIGNALS, dimension="all", start=start, end=end
    )
    context = {
        "viewer": viewer,
        "models": queries.model_summaries(session, project_id),
        "open_alerts": queries.alert_rows(session, project_id, [AlertStatus.open], limit=10),
        "alert_counts": queries.alert_counts(session, project_id),
        "drift_run": queries.last_drift_run(session, project_id),
        "datasets": queries.dataset_names(session, project_id),
        "signals_figure": figures.small_multiples(points, queries.SEED_SIGNALS) if points else None,
    }
    return render(request, "overview.html", context)


@router.get("/models/{model}", response_class=HTMLResponse)
def model_page(
    request: Request, model: Text, viewer: ViewerDep, session: SessionDep
) -> HTMLResponse:
    state = registry.model_state(session, viewer.principal.project_id, model)
    checkpoints = queries.model_checkpoints(session, state.model.id)
    checkpoint_ids = [c.id for c in checkpoints]
    history = list(reversed(state.history))
    context = {
        "viewer": viewer,
        "state": state,
        "checkpoints": checkpoints,
        "versions": {c.id: c.version for c in checkpoints},
        "history": history,
        "verdicts": queries.gate_verdicts(session, {h.gate_id for h in history if h.gate_id}),
        "runs": queries.runs_for_checkpoints(session, viewer.principal.project_id, checkpoint_ids),
        "gates": queries.gates_for_checkpoints(session, checkpoint_ids),
        "lineage_figure": figures.lineage(
            checkpoints, state.champion.id if state.champion else None
        )
        if checkpoints
        else None,
    }
    return render(request, "model.html", context)


@router.get("/models/{model}/rollback", response_class=HTMLResponse)
def rollback_page(
    request: Request,
    model: Text,
    viewer: ViewerDep,
    session: SessionDep,
    alert_id: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    state = registry.model_state(session, viewer.principal.project_id, model)
    alert = (
        queries.alert_detail(session, viewer.principal.project_id, alert_id)[0]
        if alert_id
        else None
    )
    context = {"viewer": viewer, "state": state, "alert": alert, "error": None}
    return render(request, "rollback.html", context)


@router.post("/models/{model}/rollback", response_model=None)
def rollback(
    request: Request,
    model: Text,
    viewer: ViewerDep,
    session: SessionDep,
    csrf_token: CsrfField,
    reason: Annotated[str, Form(max_length=2000)] = "",
    alert_id: Annotated[int | None, Form(ge=1)] = None,
) -> HTMLResponse | RedirectResponse:
    auth.check_csrf(request, csrf_token)
    _require(viewer, Role.write)
    if not reason.strip():
        state = registry.model_state(session, viewer.principal.project_id, model)
        alert = (
            queries.alert_detail(session, viewer.principal.project_id, alert_id)[0]
            if alert_id
            else None
        )
        context = {"viewer": viewer, "state": state, "alert": alert, "error": "Write a reason."}
        return render(request, "rollback.html", context, status_code=422)
    registry.rollback(session, viewer.principal, model, None, reason.strip(), alert_id=alert_id)
    return redirect(f"/models/{model}?rolled_back=1")


@router.get("/checkpoints/{checkpoint_id}", response_class=HTMLResponse)
def checkpoint_page(
    request: Request, checkpoint_id: int, viewer: ViewerDep, session: SessionDep
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    checkpoint = queries.checkpoint_in_project(session, project_id, checkpoint_id)
    model = queries.model_by_id(session, checkpoint.model_id)
    parent_ids = {checkpoint.parent_id} if checkpoint.parent_id else set()
    context = {
        "viewer": viewer,
        "checkpoint": checkpoint,
        "model": model,
        "parent_version": queries.versions_by_id(session, parent_ids).get(
            checkpoint.parent_id or 0
        ),
        "children": queries.checkpoint_children(session, checkpoint.id),
        "runs": queries.runs_for_checkpoints(session, project_id, [checkpoint.id]),
        "gates": queries.gates_for_checkpoints(session, [checkpoint.id]),
    }
    return render(request, "checkpoint.html", context)


# --- runs and gates ---------------------------------------------------------------------------


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(
    request: Request,
    run_id: int,
    viewer: ViewerDep,
    session: SessionDep,
    cohort: OptionalText = None,
    evaluator: OptionalText = None,
    failures: bool = False,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    run = queries.run_in_project(session, project_id, run_id)
    summary = queries.run_summary(session, project_id, run_id)
    cohort_filter = _parse_cohort(cohort)
    cells = queries.run_cohort_cells(session, run)
    rows = queries.run_result_rows(
        session, run, cohort_filter, evaluator, failures, (page - 1) * PAGE_SIZE, PAGE_SIZE + 1
    )
    context = {
        "viewer": viewer,
        "run": run,
        "summary": summary,
        "live": summary.status in ("queued", "running"),
        "cohorts": sorted({c.cohort for c in cells}),
        "evaluators": sorted({c.evaluator for c in cells}),
        "rows": rows[:PAGE_SIZE],
        "has_more": len(rows) > PAGE_SIZE,
        "filters": {"cohort": cohort, "evaluator": evaluator, "failures": failures, "page": page},
        "comparable_runs": queries.comparable_runs(session, project_id, run),
        "pass_figure": figures.cohort_heatmap(cells, "pass_rate") if cells else None,
        "score_figure": figures.cohort_heatmap(cells, "mean_score") if cells else None,
    }
    return render(request, "run.html", context)


def _parse_cohort(cohort: str | None) -> tuple[str, str] | None:
    if not cohort:
        return None
    if cohort == "all":
        return ("all", "all")
    dimension, sep, value = cohort.partition("=")
    if not sep or not dimension:
        raise Unprocessable(
            "cohort: expected dimension=value, e.g. user_segment=free", field="cohort"
        )
    return dimension, value


@router.get("/gates/{gate_id}", response_class=HTMLResponse)
def gate_page(
    request: Request, gate_id: int, viewer: ViewerDep, session: SessionDep
) -> HTMLResponse:
    gate = queries.gate_in_project(session, viewer.principal.project_id, gate_id)
    model = queries.model_by_id(session, gate.model_id)
    context = {
        "viewer": viewer,
        "gate": gate,
        "model": model,
        "versions": queries.versions_by_id(session, {gate.checkpoint_id}),
        **_cohort_changes(gate.comparisons, gate.policy),
    }
    return render(request, "gate.html", context)


def _cohort_changes(comparisons: list[dict[str, Any]], policy: dict[str, Any]) -> dict[str, Any]:
    """The forest plot and table rows of a decision, regressions first."""
    ordered = sorted(
        comparisons,
        key=lambda c: (not c.get("regressed"), str(c.get("evaluator")), figures.cohort_name(c)),
    )
    margin = policy.get("margin")
    metric = str(policy.get("metric", "pass_rate"))
    return {
        "comparisons": [(c, figures.cohort_name(c)) for c in ordered],
        "forest_figure": figures.forest(ordered, margin, metric) if ordered else None,
    }


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    baseline_run: Annotated[int, Query(ge=1)],
    candidate_run: Annotated[int, Query(ge=1)],
) -> HTMLResponse:
    """Any two runs of one dataset, decided as a gate would under the candidate model's
    current policy, without storing a gate or changing any checkpoint."""
    compared = gates.compare_runs(session, viewer.principal.project_id, candidate_run, baseline_run)
    context = {
        "viewer": viewer,
        "compared": compared,
        "verdict": compared.decision.verdict.value,
        "reasons": compared.decision.reasons,
        **_cohort_changes(compared.decision.comparisons, compared.spec.model_dump(mode="json")),
    }
    return render(request, "compare.html", context)


# --- drift and alerts --------------------------------------------------------------------------


@router.get("/drift", response_class=HTMLResponse)
def drift_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    model: OptionalText = None,
    signal: Annotated[str, Query(max_length=64)] = "eval_fail_rate",
    dimension: Annotated[str, Query(max_length=100)] = "all",
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    if signal not in queries.ALL_SIGNALS:
        raise Unprocessable(f"signal: one of {', '.join(queries.ALL_SIGNALS)}", field="signal")
    start, end = _window(start, end, 45)
    models = queries.model_names(session, project_id)
    model = model or (models[0] if models else None)

    # Beyond four months a chart of days is noise: weekly sums, without the daily band.
    weekly = (end - start).days > WEEKLY_AFTER_DAYS

    def series(signals: list[str], dimension: str) -> list[queries.SignalPoint]:
        return queries.signal_series(
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
    alerts = queries.alert_rows(
        session, project_id, list(AlertStatus), model=model, start=start, end=end, limit=500
    )
    alert_marks = [
        (a.day, a.value, a.observed, a.id)
        for a in alerts
        if a.signal == signal and a.dimension == dimension
    ]
    changes = queries.champion_changes(session, project_id, model, start, end)
    calibration = series(["brier_score", "ece"], "all")
    calibration_bins = (
        queries.calibration_bins(
            session, project_id, model=model, dimension=dimension, start=start, end=end
        )
        if model
        else []
    )
    refusal = series(["over_refusal_rate", "under_refusal_rate"], "all")
    context = {
        "viewer": viewer,
        "models": models,
        "signals": [(s, figures.signal_label(s)) for s in queries.ALL_SIGNALS],
        "dimensions": queries.signal_dimensions(session, project_id),
        "filters": {
            "model": model,
            "signal": signal,
            "dimension": dimension,
            "from": start.isoformat(),
            "to": end.isoformat(),
        },
        "alerts": [a for a in alerts if a.signal == signal and a.dimension == dimension],
        "weekly": weekly,
        "drift_figure": figures.drift(points, signal, alert_marks, changes, banded=not weekly)
        if points
        else None,
        "calibration_figure": figures.per_signal(
            calibration, "brier_score", changes, "Brier score and ECE (lower is better)", not weekly
        )
        if calibration
        else None,
        "reliability_figure": figures.reliability(
            calibration_bins,
            f"Reliability {'of all traffic' if dimension == 'all' else 'per ' + dimension}, "
            f"{start} to {end}",
        )
        if calibration_bins
        else None,
        "refusal_figure": figures.per_signal(
            refusal, "refusal_rate", changes, "Over- and under-refusal", not weekly
        )
        if refusal
        else None,
    }
    return render(request, "drift.html", context)


@router.get("/alerts", response_class=HTMLResponse)
def alerts_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    status: Annotated[AlertStatus | None, Query()] = None,
    model: OptionalText = None,
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    statuses = [status] if status else [AlertStatus.open, AlertStatus.acknowledged]
    context = {
        "viewer": viewer,
        "alerts": queries.alert_rows(session, project_id, statuses, model=model, limit=200),
        "counts": queries.alert_counts(session, project_id),
        "models": queries.model_names(session, project_id),
        "filters": {"status": status.value if status else None, "model": model},
        "statuses": [s.value for s in AlertStatus],
    }
    return render(request, "alerts.html", context)


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert_page(
    request: Request, alert_id: int, viewer: ViewerDep, session: SessionDep
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    row, alert = queries.alert_detail(session, project_id, alert_id)
    start, end = row.day - timedelta(days=21), row.day + timedelta(days=7)
    points = queries.signal_series(
        session,
        project_id,
        signals=[row.signal],
        dimension=row.dimension,
        start=start,
        end=end,
        model=row.model,
        value=row.value,
    )
    changes = queries.champion_changes(session, project_id, row.model, start, end)
    samples, _ = queries.events(
        session,
        project_id,
        queries.EventFilter(trace_ids=tuple(alert.sample_trace_ids[:20])),
        None,
        20,
    )
    target = queries.versions_by_id(
        session, {alert.rollback_target_id} if alert.rollback_target_id else set()
    )
    context = {
        "viewer": viewer,
        "alert": row,
        "raw": alert,
        "rollback_version": target.get(alert.rollback_target_id or 0),
        "samples": samples,
        "deliveries": queries.deliveries_for_alert(session, project_id, alert_id),
        "band_figure": figures.drift(
            points,
            row.signal,
            [(row.day, row.value, row.observed, row.id)],
            changes,
            f"{figures.signal_label(row.signal)} · {row.dimension}={row.value}",
        )
        if points
        else None,
    }
    return render(request, "alert.html", context)


@router.post("/alerts/{alert_id}/ack")
def acknowledge_alert(
    request: Request, alert_id: int, viewer: ViewerDep, session: SessionDep, csrf_token: CsrfField
) -> RedirectResponse:
    auth.check_csrf(request, csrf_token)
    _require(viewer, Role.write)
    alerts.acknowledge(session, viewer.principal, alert_id, "acknowledged on the dashboard")
    return redirect(f"/alerts/{alert_id}")


@router.post("/alerts/{alert_id}/resolve")
def resolve_alert(
    request: Request, alert_id: int, viewer: ViewerDep, session: SessionDep, csrf_token: CsrfField
) -> RedirectResponse:
    auth.check_csrf(request, csrf_token)
    _require(viewer, Role.write)
    alerts.resolve(session, viewer.principal, alert_id, "resolved on the dashboard")
    return redirect(f"/alerts/{alert_id}")


# --- traces ---------------------------------------------------------------------------------


@router.get("/traces", response_class=HTMLResponse)
def traces_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    model: OptionalText = None,
    checkpoint: Annotated[int | None, Query(ge=1)] = None,
    route: OptionalText = None,
    user_segment: OptionalText = None,
    prompt_version: OptionalText = None,
    flag: Annotated[str | None, Query(max_length=32)] = None,
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
    before: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    if flag and flag not in queries.EVENT_FLAGS:
        raise Unprocessable(f"flag: one of {', '.join(queries.EVENT_FLAGS)}", field="flag")
    filters = queries.EventFilter(
        model=model or None,
        checkpoint_id=checkpoint,
        route=route or None,
        user_segment=user_segment or None,
        prompt_version=prompt_version or None,
        flag=flag or None,
        start=datetime.combine(start, time(), UTC) if start else None,
        end=datetime.combine(end, time.max, UTC) if end else None,
    )
    rows, next_before = queries.events(
        session, viewer.principal.project_id, filters, before, PAGE_SIZE
    )
    params = {
        "model": model,
        "checkpoint": checkpoint,
        "route": route,
        "user_segment": user_segment,
        "prompt_version": prompt_version,
        "flag": flag,
        "from": start.isoformat() if start else None,
        "to": end.isoformat() if end else None,
    }
    context = {
        "viewer": viewer,
        "rows": rows,
        "next_before": next_before,
        "filters": params,
        "models": queries.model_names(session, viewer.principal.project_id),
        "flags": list(queries.EVENT_FLAGS),
    }
    return render(request, "traces.html", context)


@router.get("/traces/{trace_id}", response_class=HTMLResponse)
def trace_page(
    request: Request,
    trace_id: Annotated[str, StringConstraints(max_length=64)],
    viewer: ViewerDep,
    session: SessionDep,
) -> HTMLResponse:
    rows, feedback = queries.trace_events(session, viewer.principal.project_id, trace_id)
    if not rows and feedback is None:
        raise NotFound(f"no trace '{trace_id}' in this project")
    context = {"viewer": viewer, "trace_id": trace_id, "rows": rows, "feedback": feedback}
    return render(request, "trace.html", context)


# --- datasets and webhooks --------------------------------------------------------------------


@router.get("/datasets/{name}", response_class=HTMLResponse)
def dataset_page(
    request: Request,
    name: Text,
    viewer: ViewerDep,
    session: SessionDep,
    version: Annotated[int | None, Query(ge=1)] = None,
    compare: Annotated[int | None, Query(ge=1)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> HTMLResponse:
    dataset, versions = queries.dataset_with_versions(session, viewer.principal.project_id, name)
    by_number = {v.version: v for v in versions}
    shown = by_number.get(version) if version else (versions[0] if versions else None)
    if version and shown is None:
        raise NotFound(f"dataset '{name}' has no version {version}")
    other = by_number.get(compare) if compare else None
    if compare and other is None:
        raise NotFound(f"dataset '{name}' has no version {compare}")
    rows = (
        queries.dataset_rows(session, shown.id, (page - 1) * PAGE_SIZE, PAGE_SIZE + 1)
        if shown
        else []
    )
    context = {
        "viewer": viewer,
        "dataset": dataset,
        "versions": versions,
        "shown": shown,
        "other": other,
        "diff": queries.version_diff(session, other.id, shown.id) if shown and other else None,
        "rows": rows[:PAGE_SIZE],
        "has_more": len(rows) > PAGE_SIZE,
        "page": page,
    }
    return render(request, "dataset.html", context)


@router.get("/webhooks", response_class=HTMLResponse)
def webhooks_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    endpoint: Annotated[int | None, Query(ge=1)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    context = {
        "viewer": viewer,
        "endpoints": queries.webhook_endpoints(session, project_id),
        "deliveries": queries.webhook_deliveries(session, project_id, endpoint, status or None),
        "filters": {"endpoint": endpoint, "status": status},
    }
    return render(request, "webhooks.html", context)


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver")
def redeliver(
    request: Request,
    webhook_id: int,
    delivery_id: int,
    viewer: ViewerDep,
    session: SessionDep,
    csrf_token: CsrfField,
) -> RedirectResponse:
    auth.check_csrf(request, csrf_token)
    _require(viewer, Role.admin)
    webhooks.redeliver(session, viewer.principal, webhook_id, delivery_id)
    return redirect(f"/webhooks?endpoint={webhook_id}")
