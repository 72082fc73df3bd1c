"""app.stats.cohorts: risk is declared, not inherited."""

from __future__ import annotations

import numpy as np
import pytest

from app.stats.cohorts import build_cohorts

ROUTES = ["billing", "billing", "search", "search", "search", None]
SEGMENTS = ["pro", "free", "pro", "free", "free", "pro"]
RISK = ["high", "low", "high", "low", "medium", "low"]


def guarded_names(**kwargs: object) -> list[str]:
    specs, _ = build_cohorts(
        {"route": ROUTES, "segment": SEGMENTS},
        RISK,
        block_risks=["high"],
        **kwargs,  # type: ignore[arg-type]
    )
    return [s.name for s in specs if s.guarded]


def test_a_slice_with_high_risk_rows_is_not_guarded() -> None:
    # route=search and segment=pro contain high-risk rows; they stay unguarded.
    assert guarded_names() == ["all", "risk=high"]


def test_declared_cohorts_are_guarded_at_their_level() -> None:
    names = guarded_names(declared_risk={"route": {"billing": "high"}, "segment": {"free": "low"}})
    assert names == ["all", "risk=high", "route=billing"]


def test_population_guard_can_be_switched_off() -> None:
    assert guarded_names(guard_population=False) == ["risk=high"]


def test_membership_and_order() -> None:
    specs, membership = build_cohorts(
        {"route": ROUTES}, RISK, block_risks=["high"], declared_risk={"route": {"search": "medium"}}
    )
    assert [s.name for s in specs] == [
        "all",
        "risk=high",
        "risk=medium",
        "risk=low",
        "route=billing",
        "route=search",
    ]
    assert membership.dtype == np.bool_
    np.testing.assert_array_equal(membership[1], [1, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(membership[5], [0, 0, 1, 1, 1, 0])
    search = specs[5]
    assert (search.risk, search.guarded, search.dimension, search.value) == (
        "medium",
        False,
        "route",
        "search",
    )


def test_refuses_clashing_dimensions_and_unknown_levels() -> None:
    with pytest.raises(ValueError, match="clashes"):
        build_cohorts({"risk": RISK}, RISK, block_risks=["high"])
    with pytest.raises(ValueError, match="unknown risk"):
        build_cohorts({}, ["extreme"] * 6, block_risks=["high"])
    with pytest.raises(ValueError, match="unknown risk"):
        build_cohorts(
            {"route": ROUTES},
            RISK,
            block_risks=["high"],
            declared_risk={"route": {"billing": "huge"}},
        )
