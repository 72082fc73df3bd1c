"""Which cohorts a gate reports and which of them it guards. Risk is declared, not inherited.

A cohort is guarded (it can block, and must pass for the gate to pass) only if it is
the whole population (when the policy guards it), a ``risk=<level>`` cohort for a
level in ``block_risks``, or a cohort declared at such a level (``declared_risk``,
e.g. ``{"route": {"billing": "high"}}``, from the dataset version or the policy). A
slice that merely contains some high-risk rows is not guarded: otherwise nearly every
slice of a realistic golden set becomes a blocking cohort and the gate blocks
unchanged candidates by multiplicity alone. Every other cohort can only warn.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from app.stats._arrays import BoolArray


@dataclass(frozen=True)
class CohortSpec:
    """One cohort of a gate: its name, whether it is guarded, its declared risk and overrides.

    ``margin`` and ``floor`` override the policy's (per-risk) margin and floor for this
    cohort; values are on the 0..1 scale of the compared per-row values.
    """

    name: str
    guarded: bool = False
    risk: str | None = None
    margin: float | None = None
    floor: float | None = None
    dimension: str | None = None
    value: str | None = None


def build_cohorts(
    dimensions: Mapping[str, Sequence[str | None]],
    row_risk: Sequence[str],
    *,
    block_risks: Collection[str],
    declared_risk: Mapping[str, Mapping[str, str]] | None = None,
    guard_population: bool = True,
    risk_levels: Sequence[str] = ("high", "medium", "low"),
) -> tuple[list[CohortSpec], BoolArray]:
    """Every cohort of a gate and its (cohorts x rows) membership.

    ``dimensions`` maps a dimension to each row's label (None: the row is in no
    cohort of that dimension); ``row_risk`` is each row's risk level. Cohorts, in
    order: ``all``, ``risk=<level>`` for each level present (in ``risk_levels``
    order), then each value of each dimension (sorted). A dimension named ``all`` or
    ``risk`` would clash with the built-in cohorts and is refused.
    """
    n = len(row_risk)
    declared = declared_risk or {}
    blocking = set(block_risks)
    for dimension, labels in dimensions.items():
        if dimension in ("all", "risk"):
            raise ValueError(f"dimension {dimension!r} clashes with a built-in cohort")
        if len(labels) != n:
            raise ValueError(f"dimension {dimension!r} has {len(labels)} labels for {n} rows")
    unknown = {level for level in row_risk if level not in risk_levels}
    if unknown:
        raise ValueError(f"unknown risk levels {sorted(unknown)}")
    specs = [CohortSpec("all", guard_population, None, dimension="all", value="all")]
    masks: list[BoolArray] = [np.ones(n, dtype=np.bool_)]
    risks = np.asarray(row_risk, dtype=object)
    for level in risk_levels:
        mask = risks == level
        if mask.any():
            specs.append(
                CohortSpec(f"risk={level}", level in blocking, level, dimension="risk", value=level)
            )
            masks.append(np.asarray(mask, dtype=np.bool_))
    for dimension in sorted(dimensions):
        column = np.asarray(dimensions[dimension], dtype=object)
        levels = declared.get(dimension, {})
        for value in sorted({v for v in dimensions[dimension] if v is not None}):
            risk = levels.get(value)
            if risk is not None and risk not in risk_levels:
                raise ValueError(f"cohort {dimension}={value}: unknown risk level {risk!r}")
            specs.append(
                CohortSpec(
                    f"{dimension}={value}",
                    risk in blocking,
                    risk,
                    dimension=dimension,
                    value=value,
                )
            )
            masks.append(np.asarray(column == value, dtype=np.bool_))
    return specs, np.vstack(masks).astype(np.bool_)
