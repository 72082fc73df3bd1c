"""How many rows a dataset version's guarded cohorts need: the gate's power analysis, before
a run (from a stated prior flip rate) and after one (the latest gate's observed discordance).

The guarded family is the default policy's (the whole population, risk=high, and the
cohorts the version declares high); each cohort's share of the block budget is the gate's
(in proportion to 1/rows among the cohorts with enough rows to block, app.stats.
multiplicity.family_shares), so the numbers are those `required_n` would give on a gate of
one evaluator with that flip rate (app.stats.planning.required_rows_prior,
docs/statistics.md §7.1)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.models import DatasetRow, DatasetVersion, Gate
from app.models.datasets import Risk
from app.stats.gate import WEIGHT_POWERS, DecisionPolicy
from app.stats.multiplicity import family_shares
from app.stats.planning import required_rows_prior

# The prior flip rate stated when nothing is measured yet: the middle of the 10-30% of rows
# that change verdict between two runs of the same model on the golden sets we measured
# (docs/statistics.md §7.4). A run with repeats measures an evaluator's own (run page).
PRIOR_FLIP_RATE = 0.2
DEFAULT_POLICY = DecisionPolicy()
BLOCK_RISK = Risk.high.value


@dataclass(frozen=True)
class CohortPlan:
    """One guarded cohort: its rows, and the rows it needs to decide at the margin."""

    dimension: str
    value: str
    risk: str | None
    rows: int
    needed: int
    needed_to_pass: int
    needed_to_block: int
    observed_needed: int | None

    @property
    def name(self) -> str:
        return "all" if self.dimension == "all" else f"{self.dimension}={self.value}"

    @property
    def short(self) -> bool:
        return self.rows < self.needed


@dataclass(frozen=True)
class VersionPlan:
    flip_rate: float
    margin: float
    repeats: int
    cohorts: list[CohortPlan]
    gate_id: int | None  # the latest gate on this version, whose discordance was observed

    @property
    def margin_points(self) -> str:
        return f"{self.margin * 100:g}"


def plan_version(
    session: Session, version: DatasetVersion, flip_rate: float, margin: float, repeats: int
) -> VersionPlan:
    """Rows needed per guarded cohort of `version` at `margin` with `repeats` calls per row,
    a prior flip rate, and the default policy's alpha, power and block power. Raises
    ValueError for a flip rate outside [0, 1/2] or a margin outside (0, 1/2)."""
    policy = DecisionPolicy(margin=margin)
    cohorts = _guarded_cohorts(session, version)
    shares = family_shares(
        [rows for *_, rows in cohorts], WEIGHT_POWERS[policy.weighting], policy.min_discordant
    )
    observed, gate_id = _observed(session, version)
    plans = []
    for (dimension, value, risk, rows), share in zip(cohorts, shares, strict=True):
        need = required_rows_prior(
            flip_rate,
            margin,
            baseline_repeats=repeats,
            candidate_repeats=repeats,
            alpha=policy.alpha,
            power=policy.power,
            block_power=policy.block_power,
            effect=policy.min_effect,
            guarded_comparisons=len(cohorts),
            block_share=float(share),
        )
        plans.append(
            CohortPlan(
                dimension,
                value,
                risk,
                rows,
                need.rows,
                need.pass_rows,
                need.block_rows,
                observed.get((dimension, value)),
            )
        )
    return VersionPlan(flip_rate, margin, repeats, plans, gate_id)


def _guarded_cohorts(
    session: Session, version: DatasetVersion
) -> list[tuple[str, str, str | None, int]]:
    """(dimension, value, risk, rows) of every guarded cohort with rows, counted in SQL."""
    high = session.scalar(
        select(func.count()).where(
            DatasetRow.project_id == version.project_id,
            DatasetRow.version_id == version.id,
            DatasetRow.risk == Risk.high,
        )
    )
    cohorts: list[tuple[str, str, str | None, int]] = [("all", "all", None, version.row_count)]
    if high:
        cohorts.append(("risk", BLOCK_RISK, BLOCK_RISK, int(high)))
    for dimension, values in sorted(version.cohort_risk.items()):
        for value, risk in sorted(values.items()):
            if risk != BLOCK_RISK:
                continue
            rows = session.scalar(
                select(func.count()).where(
                    DatasetRow.project_id == version.project_id,
                    DatasetRow.version_id == version.id,
                    DatasetRow.cohort[dimension].as_string() == value,
                )
            )
            if rows:
                cohorts.append((dimension, value, risk, int(rows)))
    return cohorts


def _observed(
    session: Session, version: DatasetVersion
) -> tuple[dict[tuple[str, str], int], int | None]:
    """The latest gate on the version: per guarded cohort, the most rows any evaluator's
    observed discordance asked for."""
    gate = session.scalar(
        select(Gate)
        .where(Gate.project_id == version.project_id, Gate.dataset_version_id == version.id)
        .order_by(Gate.id.desc())
        .limit(1)
    )
    if gate is None:
        return {}, None
    needed: dict[tuple[str, str], int] = {}
    for comparison in gate.comparisons:
        required = comparison.get("required_n")
        if comparison.get("guarded") and required is not None:
            key = (str(comparison["dimension"]), str(comparison["value"]))
            needed[key] = max(needed.get(key, 0), int(required))
    return needed, gate.id
