"""Typed reads of models, checkpoints and champion history, shared by the API and the pages.

Every function filters by the project it is given: a caller never sees another tenant."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, aliased

from app.models import (
    Alert,
    ChampionHistory,
    Checkpoint,
    Dataset,
    DatasetVersion,
    EvaluationRun,
    Gate,
    GatePolicy,
    Model,
)
from app.models.drift import DATA_CORRECTED
from app.models.gates import GateVerdict
from app.models.runs import RunStatus


@dataclass(frozen=True)
class ModelSummary:
    name: str
    champion_id: int | None
    champion_version: str | None
    champion_kind: str | None
    champion_since: datetime | None
    checkpoints: int


def model_summaries(session: Session, project_id: int) -> list[ModelSummary]:
    latest = (
        select(ChampionHistory.model_id, func.max(ChampionHistory.id).label("last_id"))
        .where(ChampionHistory.project_id == project_id)
        .group_by(ChampionHistory.model_id)
        .subquery()
    )
    counts = (
        select(Checkpoint.model_id, func.count().label("n"))
        .where(Checkpoint.project_id == project_id)
        .group_by(Checkpoint.model_id)
        .subquery()
    )
    entry = aliased(ChampionHistory)
    rows = session.execute(
        select(
            Model.name,
            Checkpoint.id,
            Checkpoint.version,
            Checkpoint.kind,
            entry.created_at,
            func.coalesce(counts.c.n, 0),
        )
        .select_from(Model)
        .outerjoin(latest, latest.c.model_id == Model.id)
        .outerjoin(entry, entry.id == latest.c.last_id)
        .outerjoin(Checkpoint, Checkpoint.id == entry.checkpoint_id)
        .outerjoin(counts, counts.c.model_id == Model.id)
        .where(Model.project_id == project_id)
        .order_by(Model.name)
    ).all()
    return [
        ModelSummary(name, cid, version, kind.value if kind else None, since, n)
        for name, cid, version, kind, since, n in rows
    ]


def model_names(session: Session, project_id: int) -> list[str]:
    return list(
        session.scalars(
            select(Model.name).where(Model.project_id == project_id).order_by(Model.name)
        )
    )


def model_checkpoints(session: Session, project_id: int, model_id: int) -> Sequence[Checkpoint]:
    return session.scalars(
        select(Checkpoint)
        .where(Checkpoint.project_id == project_id, Checkpoint.model_id == model_id)
        .order_by(Checkpoint.id)
    ).all()


def model_by_id(session: Session, model_id: int) -> Model:
    model = session.get(Model, model_id)
    assert model is not None  # foreign keys guarantee it
    return model


def versions_by_id(session: Session, project_id: int, checkpoint_ids: set[int]) -> dict[int, str]:
    if not checkpoint_ids:
        return {}
    rows = session.execute(
        select(Checkpoint.id, Checkpoint.version).where(
            Checkpoint.project_id == project_id, Checkpoint.id.in_(checkpoint_ids)
        )
    ).all()
    return {cid: version for cid, version in rows}


def checkpoint_children(
    session: Session, project_id: int, checkpoint_id: int
) -> Sequence[Checkpoint]:
    return session.scalars(
        select(Checkpoint)
        .where(Checkpoint.project_id == project_id, Checkpoint.parent_id == checkpoint_id)
        .order_by(Checkpoint.id)
    ).all()


def replaced_under_alert(session: Session, history: Sequence[ChampionHistory]) -> set[int]:
    """The entries of one model's champion `history` that replaced a checkpoint while it stood
    under an alert about it: one unresolved at the change (recorded then, in
    `previous_open_alert_ids`, wherever the alert moved since), or one about it opened after
    the change (the daily job caught the regression only after the fix shipped: a catch-up
    run, late data, a team acting on complaints first; alerts of a later term as champion
    count too, which matters only to changes before that term, and those it also makes
    suspect). An alert resolved `data_corrected` found that none of its days regressed, so it
    counts for neither. Two small reads: the recorded alerts' resolutions, and the newest
    opening of an alert about each replaced checkpoint, grouped by the database. An alert
    opened after the change that has since moved to another checkpoint (docs/statistics.md
    §8.5) is matched on the checkpoint it is about now."""
    replacing = [entry for entry in history if entry.previous_checkpoint_id is not None]
    if not replacing:
        return set()
    project_id, model_id = history[0].project_id, history[0].model_id
    recorded = {alert_id for entry in replacing for alert_id in entry.previous_open_alert_ids}
    corrected = (
        set(
            session.scalars(
                select(Alert.id).where(
                    Alert.project_id == project_id,
                    Alert.id.in_(recorded),
                    Alert.resolution == DATA_CORRECTED,
                )
            )
        )
        if recorded
        else set()
    )
    newest_opening: dict[int | None, datetime] = dict(
        session.execute(
            select(Alert.checkpoint_id, func.max(Alert.opened_at))
            .where(
                Alert.project_id == project_id,
                Alert.model_id == model_id,
                Alert.checkpoint_id.in_({entry.previous_checkpoint_id for entry in replacing}),
                or_(Alert.resolution.is_(None), Alert.resolution != DATA_CORRECTED),
            )
            .group_by(Alert.checkpoint_id)
        ).all()
    )
    return {
        entry.id
        for entry in replacing
        if any(alert_id not in corrected for alert_id in entry.previous_open_alert_ids)
        or (
            (opened := newest_opening.get(entry.previous_checkpoint_id)) is not None
            and opened > entry.created_at
        )
    }


def champion_changes(
    session: Session, project_id: int, model: str | None, start: date, end: date
) -> list[tuple[str, datetime, str, str]]:
    """(model, when, action, version) of every champion change in the window."""
    stmt = (
        select(Model.name, ChampionHistory.created_at, ChampionHistory.action, Checkpoint.version)
        .join(Model, Model.id == ChampionHistory.model_id)
        .join(Checkpoint, Checkpoint.id == ChampionHistory.checkpoint_id)
        .where(
            ChampionHistory.project_id == project_id,
            ChampionHistory.created_at >= datetime.combine(start, time(), UTC),
            ChampionHistory.created_at < datetime.combine(end + timedelta(days=1), time(), UTC),
        )
        .order_by(ChampionHistory.id)
    )
    if model is not None:
        stmt = stmt.where(Model.name == model)
    return [
        (name, when, action.value, version) for name, when, action, version in session.execute(stmt)
    ]


def latest_policy(session: Session, project_id: int, model_id: int) -> GatePolicy | None:
    """The model's current gate policy version; None until one is stored (the default)."""
    return session.scalar(
        select(GatePolicy)
        .where(GatePolicy.project_id == project_id, GatePolicy.model_id == model_id)
        .order_by(GatePolicy.version.desc())
        .limit(1)
    )


@dataclass(frozen=True)
class StandingBlock:
    gate_id: int
    dataset: str


def standing_blocks(session: Session, project_id: int, checkpoint_id: int) -> list[StandingBlock]:
    """The datasets on which a block of the checkpoint stands (the newest standing one each).

    Only a real gate's block (not `exploratory`: the column the retry budget reads, never the
    notes) stands: a block under a policy the request overrode answers a question the stored
    policy does not ask (docs/statistics.md §7.3). It stands until a later pass on the same
    dataset, on the block's version or a later one, decided under the model's gate policy as
    stored (a real gate) against the block's own baseline checkpoint or against the champion
    of the day. A pass on another dataset measured other rows and says nothing about what
    the block found; a pass on an earlier version of the dataset never saw the rows or the
    cohort risks the block's version added, which may be what it found; an inconclusive gate
    is no evidence either way; a pass against a weaker baseline, or on a margin the request
    widened, shows nothing the block did not (neither could promote on its own). Gates are
    numbered in the order they were decided."""
    decisive = session.execute(
        select(
            Gate.id,
            Gate.verdict,
            Dataset.name,
            DatasetVersion.version,
            EvaluationRun.checkpoint_id,
            Gate.exploratory,
            Gate.created_at,
        )
        .join(DatasetVersion, DatasetVersion.id == Gate.dataset_version_id)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .join(EvaluationRun, EvaluationRun.id == Gate.baseline_run_id)
        .where(
            Gate.project_id == project_id,
            Gate.checkpoint_id == checkpoint_id,
            Gate.verdict.in_((GateVerdict.block, GateVerdict.passed)),
        )
        .order_by(Gate.id)
    ).all()
    if not decisive:
        return []
    reigns = session.execute(
        select(ChampionHistory.created_at, ChampionHistory.checkpoint_id)
        .join(Checkpoint, Checkpoint.model_id == ChampionHistory.model_id)
        .where(ChampionHistory.project_id == project_id, Checkpoint.id == checkpoint_id)
        .order_by(ChampionHistory.id)
    ).all()
    starts = [reign.created_at for reign in reigns]

    def champion_at(moment: datetime) -> int | None:
        index = bisect.bisect_right(starts, moment)
        return reigns[index - 1].checkpoint_id if index else None

    # dataset -> (baseline checkpoint, dataset version) -> the newest block's gate. Keyed by
    # version too: a later block on an earlier version must not replace one on a later
    # version, which a pass on the earlier version cannot lift.
    standing: dict[str, dict[tuple[int, int], int]] = {}
    for gate_id, verdict, dataset, version, baseline, exploratory, decided_at in decisive:
        blocks = standing.setdefault(dataset, {})
        if exploratory:
            continue  # a what-if policy's verdict neither blocks nor lifts
        if verdict is GateVerdict.block:
            blocks[baseline, version] = gate_id
            continue
        against_champion = baseline == champion_at(decided_at)
        for checkpoint_id, blocked_on in list(blocks):
            if (against_champion or checkpoint_id == baseline) and blocked_on <= version:
                del blocks[checkpoint_id, blocked_on]
    return [
        StandingBlock(max(blocks.values()), dataset)
        for dataset, blocks in sorted(standing.items())
        if blocks
    ]


@dataclass(frozen=True)
class NewerVersion:
    dataset: str
    gated: int
    latest: int


def newer_dataset_version(
    session: Session, project_id: int, dataset_version_id: int
) -> NewerVersion | None:
    """Whether the dataset of `dataset_version_id` has a later version: a gate on an older
    version never saw the rows or the cohort risks added since, so it cannot stand for the
    dataset as it is now."""
    gated = aliased(DatasetVersion)
    row = session.execute(
        select(Dataset.name, gated.version, func.max(DatasetVersion.version))
        .join(Dataset, Dataset.id == gated.dataset_id)
        .join(DatasetVersion, DatasetVersion.dataset_id == gated.dataset_id)
        .where(
            gated.project_id == project_id,
            gated.id == dataset_version_id,
            DatasetVersion.project_id == project_id,
        )
        .group_by(Dataset.name, gated.version)
    ).first()
    if row is None or row[2] == row[1]:
        return None
    return NewerVersion(row[0], row[1], row[2])


def runs_not_pooled(
    session: Session, project_id: int, checkpoint_id: int, version_id: int, pooled: Sequence[int]
) -> Sequence[EvaluationRun]:
    """Runs of a checkpoint on a dataset version, other than `pooled`, that are or may become
    evidence: queued, running or succeeded (a failed run is none), oldest first. A gate pools
    every succeeded run of its candidate there (docs/statistics.md §7.3): one decided, or
    promoted on, while another was in progress saw part of the evidence."""
    return session.scalars(
        select(EvaluationRun)
        .where(
            EvaluationRun.project_id == project_id,
            EvaluationRun.checkpoint_id == checkpoint_id,
            EvaluationRun.dataset_version_id == version_id,
            EvaluationRun.status != RunStatus.failed,
            EvaluationRun.id.not_in(pooled),
        )
        .order_by(EvaluationRun.id)
    ).all()
