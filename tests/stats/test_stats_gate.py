"""app.stats.gate: the verdict table, the families, floors by bound, repeats and retries."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from scipy import stats

from app.stats.cohorts import CohortSpec
from app.stats.gate import DecisionPolicy, EvaluatorOutcomes, UnjudgedRows, decide_gate
from app.stats.margin import exact_pvalue, mcnemar_one_sided, score_bound
from app.stats.multiplicity import design_weights, weighted_holm

DEFAULT = DecisionPolicy()


def table(both: int, lost: int, won: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Baseline and candidate pass/fail rows with the given 2x2 cells."""
    base = np.repeat([1.0, 1.0, 0.0, 0.0], [both, lost, won, neither])
    cand = np.repeat([1.0, 0.0, 1.0, 0.0], [both, lost, won, neither])
    return base, cand


def one_cohort(
    base: np.ndarray,
    cand: np.ndarray,
    policy: DecisionPolicy = DEFAULT,
    spec: CohortSpec | None = None,
    **kwargs: object,
):  # type: ignore[no-untyped-def]
    spec = spec or CohortSpec("risk=high", guarded=True, risk="high")
    membership = np.ones((1, base.size), dtype=np.bool_)
    return decide_gate(
        [EvaluatorOutcomes("judge", base, cand)],
        membership,
        [spec],
        policy,
        **kwargs,  # type: ignore[arg-type]
    )


class TestVerdictTable:
    def test_a_collapse_in_a_guarded_cohort_blocks_on_the_exact_test(self) -> None:
        decision = one_cohort(*table(20, 20, 0, 0))  # 40/40 -> 20/40
        record = decision.records[0]
        assert decision.verdict == "block"
        assert record.status == "block" and record.method == "exact"
        assert record.p_block == pytest.approx(exact_pvalue(40, 20, 0, -0.02, "lower"))
        assert record.p_block_adjusted == pytest.approx(record.p_block)
        assert "beyond the margin" in record.reason
        assert decision.reasons[0]["severity"] == "block"

    def test_identical_results_pass_only_with_enough_rows(self) -> None:
        few = one_cohort(*table(40, 0, 0, 10))
        assert few.verdict == "inconclusive"
        assert "rows needed" in few.records[0].reason
        assert few.records[0].required_n is not None and few.records[0].required_n > 50
        many = one_cohort(*table(1500, 0, 0, 500))
        assert many.verdict == "pass" and many.records[0].method == "score"
        exact = one_cohort(*table(300, 0, 0, 100))
        assert exact.verdict == "pass" and exact.records[0].method == "exact"

    def test_a_significant_drop_inside_the_margin_warns_and_does_not_block(self) -> None:
        # 20,000 rows, 400 lost and 250 won: a 0.75-point drop, p ~ 1e-9, inside 2 points.
        decision = one_cohort(*table(17000, 400, 250, 2350))
        record = decision.records[0]
        assert record.p_drop == pytest.approx(float(mcnemar_one_sided(400, 250)))
        assert record.p_drop < 1e-8 and record.p_block > 0.5
        assert record.status == "pass"
        assert record.warning is not None and "inside the margin" in record.warning
        assert decision.verdict == "pass"
        assert [r["severity"] for r in decision.reasons] == ["info", "warn"]

    def test_a_noisy_cohort_is_inconclusive_with_the_rows_needed(self) -> None:
        decision = one_cohort(*table(60, 12, 9, 19))
        record = decision.records[0]
        assert record.status == "inconclusive"
        assert record.required_n is not None and record.required_n > 1000
        assert f"about {record.required_n} rows" in record.reason
        assert record.required_n == max(record.required_n_pass, record.required_n_block)  # type: ignore[type-var]

    def test_too_few_discordant_rows_cannot_block_on_their_own(self) -> None:
        # 5/5 -> 0/5 is significant even exactly (0.51^5 ~ 0.035) but rests on 5 rows.
        base, cand = table(0, 5, 0, 0)
        decision = one_cohort(base, cand)
        assert decision.records[0].p_block <= 0.05
        assert decision.records[0].status == "inconclusive"
        assert "discordant rows" in decision.records[0].reason
        lax = one_cohort(base, cand, dataclasses.replace(DEFAULT, min_discordant=1))
        assert lax.verdict == "block"

    def test_a_two_row_cohort_whose_rows_flip_cannot_block(self) -> None:
        decision = one_cohort(*table(0, 2, 0, 0), dataclasses.replace(DEFAULT, min_discordant=1))
        assert decision.records[0].p_block > 0.25
        assert decision.verdict == "inconclusive"

    def test_an_empty_guarded_cohort_is_inconclusive_and_json_safe(self) -> None:
        base, cand = table(30, 1, 1, 8)
        membership = np.array([[True] * 40, [False] * 40])
        cohorts = [CohortSpec("all", guarded=True), CohortSpec("risk=high", True, "high")]
        decision = decide_gate(
            [EvaluatorOutcomes("judge", base, cand)], membership, cohorts, DEFAULT
        )
        empty = decision.records[1]
        assert empty.n == 0 and empty.status == "inconclusive" and empty.delta is None
        assert empty.upper_bound is None and empty.required_n is None
        json.dumps(decision.as_dict(), allow_nan=False)


class TestFamilies:
    def test_a_comparison_without_rows_takes_no_share_of_the_budget(self) -> None:
        """Evaluator "b" scored none of the guarded billing rows. Its empty comparison can
        never reject; counted as one row under 1/n weights it took 93% of alpha and turned a
        clear block of evaluator "a" on the whole population into inconclusive."""
        n = 400
        billing = np.arange(n) >= 340
        base, cand = np.ones(n), np.ones(n)
        cand[:24] = 0.0  # "a": 24 of 400 lost, none won
        membership = np.vstack([np.ones(n, dtype=np.bool_), billing])
        cohorts = [
            CohortSpec("all", guarded=True),
            CohortSpec("route=billing", guarded=True, risk="high"),
        ]
        scored = np.flatnonzero(~billing)
        b = EvaluatorOutcomes("b", np.ones(scored.size), np.ones(scored.size), rows=scored)
        decision = decide_gate(
            [EvaluatorOutcomes("a", base, cand), b], membership, cohorts, DEFAULT
        )
        a_all, a_billing, b_all, b_billing = decision.records
        assert (b_billing.n, b_billing.status) == (0, "inconclusive")
        # The family is the three comparisons with rows, weighted 1/n (Holm).
        family = [a_all.p_block, a_billing.p_block, b_all.p_block]
        expected = weighted_holm(family, design_weights([400, 60, 340], 1.0))
        assert a_all.p_block_adjusted == pytest.approx(expected[0])
        assert a_all.status == "block" and decision.verdict == "block"

    def test_a_small_cohort_takes_at_most_ten_times_the_population_s_share(self) -> None:
        """Six identical high-risk rows beside 400 took 98.5% of alpha under 1/n weights:
        20 of 400 lost (p = 0.0009) came out inconclusive (adjusted 0.064), which
        `allow_inconclusive` promotes. Capped at 10:1 the six rows take 10/11 (they still
        block when all six are lost, p = 0.019) and the drop blocks (adjusted 0.010)."""
        n = 406
        high = np.arange(n) >= 400
        base, cand = np.ones(n), np.ones(n)
        cand[:20] = 0.0
        membership = np.vstack([np.ones(n, dtype=np.bool_), high])
        cohorts = [CohortSpec("all", guarded=True), CohortSpec("risk=high", True, "high")]
        decision = decide_gate(
            [EvaluatorOutcomes("judge", base, cand)], membership, cohorts, DEFAULT
        )
        assert decision.verdict == "block"
        everyone, six = decision.records
        assert everyone.p_block < 0.001 and everyone.status == "block"
        assert everyone.p_block_adjusted == pytest.approx(everyone.p_block * 11)
        assert six.p_block_adjusted == 1.0 and six.status == "inconclusive"
        cand[400:] = 0.0
        lost_all = decide_gate(
            [EvaluatorOutcomes("judge", base, cand)], membership, cohorts, DEFAULT
        )
        assert lost_all.records[1].status == "block"

    def test_a_cohort_of_fewer_rows_than_min_discordant_takes_no_share_of_the_budget(
        self,
    ) -> None:
        """Five rows declared high-risk can never show six discordant rows, so their
        comparison can never block; counted in the family they took a share of alpha, and a
        clear drop on the whole population (16 of 400 lost, p = 0.0075) came out
        inconclusive (adjusted 0.62 under uncapped 1/n weights). Their required_n still
        reads their share of joining."""
        n = 405
        high = np.arange(n) >= 400
        base, cand = np.ones(n), np.ones(n)
        cand[:16] = 0.0
        membership = np.vstack([np.ones(n, dtype=np.bool_), high])
        cohorts = [CohortSpec("all", guarded=True), CohortSpec("risk=high", True, "high")]
        decision = decide_gate(
            [EvaluatorOutcomes("judge", base, cand)], membership, cohorts, DEFAULT
        )
        everyone, few = decision.records
        assert decision.verdict == "block" and everyone.status == "block"
        assert everyone.p_block_adjusted == everyone.p_block < 0.01  # the family is itself
        assert (few.n, few.status, few.p_block_adjusted) == (5, "inconclusive", 1.0)
        assert few.required_n is not None and few.required_n > 5
        # With min_discordant 5 the five rows could block: they are in the family again, and
        # their share leaves the population's drop undecided.
        five = decide_gate(
            [EvaluatorOutcomes("judge", base, cand)],
            membership,
            cohorts,
            dataclasses.replace(DEFAULT, min_discordant=5),
        )
        family = weighted_holm([everyone.p_block, 1.0], design_weights([405, 5], 1.0))
        assert five.records[0].p_block_adjusted == pytest.approx(family[0])
        assert five.verdict == "inconclusive" and five.records[0].status == "inconclusive"

    def test_unguarded_cohorts_only_warn(self) -> None:
        # A collapse in an unguarded cohort next to a quiet, large guarded population.
        rng = np.random.default_rng(0)
        quiet = (rng.random(3000) < 0.8).astype(float)
        base = np.concatenate([np.ones(30), quiet])
        cand = np.concatenate([np.repeat([1.0, 0.0], [5, 25]), quiet])
        membership = np.zeros((2, base.size), dtype=np.bool_)
        membership[0] = True
        membership[1, :30] = True
        cohorts = [CohortSpec("all", guarded=True), CohortSpec("route=billing")]
        decision = decide_gate(
            [EvaluatorOutcomes("judge", base, cand)], membership, cohorts, DEFAULT
        )
        unguarded = decision.records[1]
        assert unguarded.status == "warn" and "cannot block" in (unguarded.warning or "")
        assert unguarded.required_n is None
        assert decision.verdict != "block"
        declared = [cohorts[0], CohortSpec("route=billing", guarded=True, risk="high")]
        assert (
            decide_gate(
                [EvaluatorOutcomes("judge", base, cand)], membership, declared, DEFAULT
            ).verdict
            == "block"
        )

    def test_guarded_comparisons_share_one_budget(self) -> None:
        # The same modest drop blocks alone, not when eight evaluators share alpha equally.
        base, cand = table(40, 16, 4, 40)
        p = exact_pvalue(100, 16, 4, -0.02, "lower")
        assert 0.05 / 8 < p <= 0.05
        alone = one_cohort(base, cand)
        assert alone.verdict == "block"
        rng = np.random.default_rng(1)
        others = []
        for j in range(7):
            noise = (rng.random(100) < 0.7).astype(float)
            others.append(EvaluatorOutcomes(f"other{j}", noise, noise))
        membership = np.ones((1, 100), dtype=np.bool_)
        equal = dataclasses.replace(DEFAULT, weighting="equal")
        crowded = decide_gate(
            [EvaluatorOutcomes("judge", base, cand), *others],
            membership,
            [CohortSpec("risk=high", True, "high")],
            equal,
        )
        assert crowded.records[0].p_block_adjusted == pytest.approx(min(1.0, 8 * p))
        assert crowded.verdict != "block"

    def test_budget_shares_follow_the_rows(self) -> None:
        # Population (1000 rows) and high-risk cohort (100 rows): shares 1/11 and 10/11.
        rng = np.random.default_rng(2)
        base = (rng.random(1000) < 0.8).astype(float)
        cand = base.copy()
        high = np.arange(100)
        cand[high[base[high] == 1][:12]] = 0.0
        membership = np.zeros((2, 1000), dtype=np.bool_)
        membership[0] = True
        membership[1, :100] = True
        cohorts = [CohortSpec("all", True), CohortSpec("risk=high", True, "high")]
        decision = decide_gate(
            [EvaluatorOutcomes("judge", base, cand)], membership, cohorts, DEFAULT
        )
        high_record = decision.records[1]
        p_all, p_high = decision.records[0].p_block, high_record.p_block
        expected = min(1.0, p_high * 11 / 10) if p_high * 11 / 10 <= p_all * 11 else None
        if expected is not None:
            assert high_record.p_block_adjusted == pytest.approx(expected)
        equal = decide_gate(
            [EvaluatorOutcomes("judge", base, cand)],
            membership,
            cohorts,
            dataclasses.replace(DEFAULT, weighting="equal"),
        )
        assert equal.records[1].p_block_adjusted >= high_record.p_block_adjusted  # type: ignore[operator]

    def test_a_cohort_declared_twice_counts_once(self) -> None:
        base, cand = table(40, 16, 4, 40)
        membership = np.ones((2, 100), dtype=np.bool_)
        cohorts = [CohortSpec("risk=high", True, "high"), CohortSpec("route=billing", True, "high")]
        decision = decide_gate(
            [EvaluatorOutcomes("judge", base, cand)], membership, cohorts, DEFAULT
        )
        assert decision.records[0].p_block_adjusted == pytest.approx(decision.records[0].p_block)
        assert decision.records[1].p_block_adjusted == pytest.approx(decision.records[0].p_block)

    def test_bh_correction_is_available(self) -> None:
        base, cand = table(20, 20, 0, 0)
        decision = one_cohort(base, cand, dataclasses.replace(DEFAULT, correction="bh"))
        assert decision.verdict == "block"

    def test_the_pass_side_needs_every_guarded_comparison(self) -> None:
        good_base, good_cand = table(1500, 0, 0, 500)
        noisy_base, noisy_cand = table(1000, 250, 250, 500)
        membership = np.ones((1, 2000), dtype=np.bool_)
        decision = decide_gate(
            [
                EvaluatorOutcomes("clean", good_base, good_cand),
                EvaluatorOutcomes("noisy", noisy_base, noisy_cand),
            ],
            membership,
            [CohortSpec("all", True)],
            DEFAULT,
        )
        assert [r.status for r in decision.records] == ["pass", "inconclusive"]
        assert decision.verdict == "inconclusive"

    def test_per_risk_margins(self) -> None:
        base, cand = table(60, 12, 4, 24)
        policy = dataclasses.replace(DEFAULT, risk_margins={"high": 0.2})
        record = one_cohort(base, cand, policy).records[0]
        assert record.margin == 0.2
        assert record.p_pass == pytest.approx(exact_pvalue(100, 12, 4, -0.2, "upper"))
        override = CohortSpec("risk=high", True, "high", margin=0.05)
        assert one_cohort(base, cand, policy, override).records[0].margin == 0.05


class TestFloors:
    def test_a_floor_is_broken_only_when_shown(self) -> None:
        # 95/100 against a floor of 0.97: below it as a point estimate, not shown below.
        spec = CohortSpec("risk=high", True, "high", floor=0.97)
        record = one_cohort(*table(95, 0, 0, 5), spec=spec).records[0]
        assert record.p_floor_broken == pytest.approx(
            stats.binomtest(95, 100, 0.97, alternative="less").pvalue
        )
        assert record.floor_status == "unclear"
        assert record.status == "inconclusive" and "floor" in record.reason

    def test_a_floor_shown_broken_blocks_even_when_nothing_changed(self) -> None:
        # Identical runs are no shortcut: 160/200 against 0.9 blocks.
        policy = dataclasses.replace(DEFAULT, floor=0.9)
        decision = one_cohort(*table(160, 0, 0, 40), policy)
        record = decision.records[0]
        assert record.floor_status == "broken" and record.status == "block"
        assert decision.verdict == "block" and "below the floor" in record.reason

    def test_floors_apply_only_to_guarded_cohorts(self) -> None:
        base, cand = table(160, 0, 0, 40)
        membership = np.ones((2, 200), dtype=np.bool_)
        cohorts = [CohortSpec("all", True), CohortSpec("route=x", floor=0.99)]
        decision = decide_gate(
            [EvaluatorOutcomes("judge", base, cand)], membership, cohorts, DEFAULT
        )
        assert decision.records[1].floor is None and decision.records[1].status == "report"
        assert decision.verdict != "block"

    def test_evaluator_floors_and_floor_met(self) -> None:
        policy = dataclasses.replace(DEFAULT, evaluator_floors={"judge": 0.5})
        record = one_cohort(*table(1500, 0, 0, 500), policy).records[0]
        assert record.floor == 0.5 and record.floor_status == "met" and record.status == "pass"


class TestRepeats:
    def test_per_row_means_take_the_score_test(self) -> None:
        rng = np.random.default_rng(5)
        pi = rng.beta(1.5, 0.5, 3000)
        base = rng.binomial(3, pi) / 3
        cand = rng.binomial(3, pi) / 3
        decision = decide_gate(
            [EvaluatorOutcomes("judge", base, cand, 3, 3)],
            np.ones((1, 3000), dtype=np.bool_),
            [CohortSpec("all", True)],
            DEFAULT,
        )
        record = decision.records[0]
        assert record.method == "score"
        assert record.baseline_repeats == 3 and record.candidate_repeats == 3
        assert record.lower_bound is not None and record.upper_bound is not None
        assert record.lower_bound < record.delta < record.upper_bound  # type: ignore[operator]

    def test_repeats_shrink_the_rows_needed(self) -> None:
        rng = np.random.default_rng(6)
        pi = rng.beta(1.5, 0.5, 1000)
        needed = []
        for k in (1, 3):
            base = rng.binomial(k, pi) / k
            cand = rng.binomial(k, pi) / k
            decision = one_cohort(base, cand, spec=CohortSpec("all", True))
            needed.append(decision.records[0].required_n)
        assert needed[1] < needed[0] / 2  # type: ignore[operator]

    def test_bounds_of_evaluators_with_different_values_are_their_own(self) -> None:
        # Bounds are computed for all evaluators at once over the union of their values.
        rng = np.random.default_rng(7)
        pi = rng.beta(1.5, 0.5, 300)
        binary = (rng.random(300) < pi).astype(float), (rng.random(300) < pi).astype(float)
        thirds = rng.binomial(3, pi) / 3, rng.binomial(3, pi) / 3
        decision = decide_gate(
            [
                EvaluatorOutcomes("binary", *binary),
                EvaluatorOutcomes("thirds", *thirds, 3, 3),
            ],
            np.ones((1, 300), dtype=np.bool_),
            [CohortSpec("all", True)],
            DEFAULT,
        )
        for record, (base, cand) in zip(decision.records, (binary, thirds), strict=True):
            values, counts = np.unique(np.round(cand - base, 12), return_counts=True)
            weights = counts[None, :].astype(float)
            upper = score_bound(values, weights, 0.95, "upper")[0]
            lower = score_bound(values, weights, 0.975, "lower")[0]
            assert record.upper_bound == pytest.approx(upper, abs=1e-9)
            assert record.lower_bound == pytest.approx(lower, abs=1e-9)

    def test_evaluator_on_a_subset_of_rows(self) -> None:
        base, cand = table(20, 20, 0, 0)
        membership = np.zeros((1, 100), dtype=np.bool_)
        membership[0, 50:90] = True
        decision = decide_gate(
            [EvaluatorOutcomes("judge", base, cand, rows=np.arange(50, 90))],
            membership,
            [CohortSpec("risk=high", True, "high")],
            DEFAULT,
        )
        assert decision.records[0].n == 40 and decision.verdict == "block"


class TestUnjudgedRows:
    """Rows judged on one side only: out of every number shown and every block test; a pass
    (and a floor shown met) must also hold with them at their worst."""

    def test_a_pass_must_hold_with_the_candidates_missing_verdicts_as_fails(self) -> None:
        base, cand = table(340, 0, 0, 0)
        unjudged = UnjudgedRows(np.arange(340, 400), np.ones(60), np.full(60, np.nan))
        membership = np.ones((1, 400), dtype=np.bool_)
        decision = decide_gate(
            [EvaluatorOutcomes("judge", base, cand, rows=np.arange(340), unjudged=unjudged)],
            membership,
            [CohortSpec("risk=high", guarded=True, risk="high")],
            DEFAULT,
        )
        record = decision.records[0]
        assert (record.n, record.unjudged, record.lost, record.delta) == (340, 60, 0, 0.0)
        assert record.p_pass == pytest.approx(exact_pvalue(340, 0, 0, -0.02, "upper"))
        assert record.p_pass <= 0.025
        # The worst case is the 2x2 table of all 400 rows with the 60 counted as lost.
        assert record.p_pass_worst_case == pytest.approx(exact_pvalue(400, 60, 0, -0.02, "upper"))
        assert record.p_block == pytest.approx(exact_pvalue(340, 0, 0, -0.02, "lower"))
        assert decision.verdict == "inconclusive" and record.status == "inconclusive"
        assert "60 row(s) judged on one side only" in record.reason

    def test_missing_baseline_verdicts_count_as_passes_and_can_cost_nothing(self) -> None:
        base, cand = table(340, 0, 0, 0)
        unjudged = UnjudgedRows(np.arange(340, 400), np.full(60, np.nan), np.ones(60))
        decision = decide_gate(
            [EvaluatorOutcomes("judge", base, cand, rows=np.arange(340), unjudged=unjudged)],
            np.ones((1, 400), dtype=np.bool_),
            [CohortSpec("risk=high", guarded=True, risk="high")],
            DEFAULT,
        )
        record = decision.records[0]
        assert record.p_pass_worst_case == pytest.approx(exact_pvalue(400, 0, 0, -0.02, "upper"))
        assert decision.verdict == "pass" and "also with the 60 row(s)" in record.reason

    def test_a_floor_is_not_met_on_the_candidates_judged_rows_alone(self) -> None:
        base, cand = table(300, 0, 0, 0)
        unjudged = UnjudgedRows(np.arange(300, 400), np.ones(100), np.full(100, np.nan))
        decision = decide_gate(
            [EvaluatorOutcomes("judge", base, cand, rows=np.arange(300), unjudged=unjudged)],
            np.ones((1, 400), dtype=np.bool_),
            [CohortSpec("risk=high", guarded=True, risk="high", margin=0.3, floor=0.9)],
            DEFAULT,
        )
        record = decision.records[0]
        assert record.p_pass <= 0.025 and record.p_pass_worst_case is not None
        assert record.p_pass_worst_case <= 0.025  # a 25-point drop is inside the 0.3 margin
        met = stats.binomtest(300, 400, 0.9, alternative="greater").pvalue
        assert record.p_floor_met_worst_case == pytest.approx(met)
        assert record.floor_status == "unclear" and decision.verdict == "inconclusive"

    @staticmethod
    def partly(rows: int, partial: int):  # type: ignore[no-untyped-def]
        """Three calls per row, every judged call a pass on both sides; on `partial` rows
        the candidate's evaluator reached no verdict on one call (mean 1.0 over the two
        judged, 2/3 with the third as a fail)."""
        ones = np.ones(rows)
        worst = np.where(np.arange(rows) < partial, 2 / 3, 1.0)
        calls = np.where(np.arange(rows) < partial, 2, 3)
        return decide_gate(
            [EvaluatorOutcomes("judge", ones, ones, 3, calls, candidate_worst=worst)],
            np.ones((1, rows), dtype=np.bool_),
            [CohortSpec("risk=high", guarded=True, risk="high")],
            DEFAULT,
        )

    def test_a_pass_must_hold_with_a_partly_judged_rows_missing_calls_as_fails(self) -> None:
        decision = self.partly(400, 100)
        record = decision.records[0]
        assert (record.n, record.unjudged, record.partly_judged) == (400, 0, 100)
        assert (record.candidate, record.delta) == (1.0, 0.0) and record.p_pass <= 0.025
        assert record.p_pass_worst_case is not None and record.p_pass_worst_case > 0.5
        assert decision.verdict == "inconclusive"
        assert "100 row(s) with calls without a verdict" in record.reason

    def test_a_few_calls_without_a_verdict_cost_less_than_the_margin(self) -> None:
        """One call in 300 without a verdict (20 of 2,000 rows): at their worst a drop of
        0.0033, well inside the 0.02 margin, so a judge with rare errors does not bar a pass."""
        decision = self.partly(2000, 20)
        record = decision.records[0]
        assert record.partly_judged == 20
        assert record.p_pass_worst_case is not None and record.p_pass_worst_case <= 0.025
        assert decision.verdict == "pass" and "also with the 20 row(s)" in record.reason

    def test_a_value_at_its_worst_cannot_be_better(self) -> None:
        with pytest.raises(ValueError, match="cannot be better"):
            decide_gate(
                [EvaluatorOutcomes("judge", [1.0], [0.5], 2, 2, candidate_worst=[1.0])],
                np.ones((1, 1), dtype=np.bool_),
                [CohortSpec("all", guarded=True)],
                DEFAULT,
            )

    def test_a_row_needs_exactly_one_sides_verdict(self) -> None:
        neither = UnjudgedRows([0], [np.nan], [np.nan])
        with pytest.raises(ValueError, match="exactly one side"):
            decide_gate(
                [EvaluatorOutcomes("judge", [1.0], [1.0], rows=[1], unjudged=neither)],
                np.ones((1, 2), dtype=np.bool_),
                [CohortSpec("all", guarded=True)],
                DEFAULT,
            )


class TestCandidateOnly:
    """An evaluator no baseline ran: no pairs, so no margin test and no drop family; a floor
    is tested on the candidate's rows by its bound (docs/statistics.md §6.2)."""

    @staticmethod
    def decide(cand: np.ndarray, unjudged: UnjudgedRows | None = None):  # type: ignore[no-untyped-def]
        base, same = table(400, 0, 0, 0)
        return decide_gate(
            [
                EvaluatorOutcomes("shared", base, same),
                EvaluatorOutcomes(
                    "new_judge",
                    cand,
                    cand,
                    rows=np.arange(cand.size),
                    candidate_only=True,
                    unjudged=unjudged,
                ),
            ],
            np.ones((1, 400), dtype=np.bool_),
            [CohortSpec("risk=high", guarded=True, risk="high")],
            DecisionPolicy(evaluator_floors={"new_judge": 0.9}),
        )

    def test_a_floor_met_on_the_candidates_rows_passes_without_a_margin_test(self) -> None:
        decision = self.decide(np.repeat([1.0, 0.0], [390, 10]))
        shared, alone = decision.records
        assert (alone.n, alone.baseline, alone.delta, alone.method) == (400, None, None, "none")
        assert (alone.p_block, alone.p_pass, alone.p_block_adjusted) == (1.0, 1.0, 1.0)
        met = stats.binomtest(390, 400, 0.9, alternative="greater").pvalue
        assert alone.p_floor_met == pytest.approx(met)
        assert (alone.floor_status, alone.status) == ("met", "pass")
        assert shared.floor is None and shared.status == "pass"
        assert decision.verdict == "pass" and decision.block_family == 2  # a margin, a floor

    def test_a_floor_broken_on_the_candidates_rows_blocks(self) -> None:
        decision = self.decide(np.repeat([1.0, 0.0], [340, 60]))
        alone = decision.records[1]
        assert (alone.floor_status, alone.status, decision.verdict) == ("broken", "block", "block")

    def test_rows_the_candidates_evaluator_never_judged_count_as_fails_for_the_floor(
        self,
    ) -> None:
        never = UnjudgedRows(np.arange(340, 400), np.ones(60), np.full(60, np.nan))
        decision = self.decide(np.ones(340), never)
        alone = decision.records[1]
        assert (alone.n, alone.unjudged, alone.candidate) == (340, 60, 1.0)
        worst = stats.binomtest(340, 400, 0.9, alternative="greater").pvalue
        assert alone.p_floor_met_worst_case == pytest.approx(worst)
        assert (alone.floor_status, alone.status, decision.verdict) == (
            "unclear",
            "inconclusive",
            "inconclusive",
        )


class TestRetries:
    def test_a_block_sticks_unless_the_pooled_gate_passes(self) -> None:
        base, cand = table(60, 12, 9, 19)
        again = one_cohort(base, cand, attempt=2, previously_blocked=True)
        assert again.verdict == "block" and again.alpha == pytest.approx(0.025)
        assert "only a pass" in again.notes[-1]
        # The standing block is stated as a block reason (the webhook sends block reasons).
        assert (
            again.reasons[0]["severity"] == "block" and "only a pass" in again.reasons[0]["message"]
        )
        lifted = one_cohort(*table(1500, 0, 0, 500), attempt=2, previously_blocked=True)
        assert lifted.verdict == "pass"

    def test_later_attempts_spend_less(self) -> None:
        base, cand = table(40, 16, 4, 40)
        p = exact_pvalue(100, 16, 4, -0.02, "lower")
        assert p <= 0.05
        assert one_cohort(base, cand).verdict == "block"
        assert p > 0.05 / 8
        assert one_cohort(base, cand, attempt=4).verdict != "block"


class TestInputs:
    def test_refuses_values_outside_zero_one_and_bad_shapes(self) -> None:
        spec = [CohortSpec("all", True)]
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            decide_gate(
                [EvaluatorOutcomes("e", [0.0, 2.0], [0.0, 1.0])],
                np.ones((1, 2), bool),
                spec,
                DEFAULT,
            )
        with pytest.raises(ValueError, match="one CohortSpec"):
            decide_gate(
                [EvaluatorOutcomes("e", [0.0], [1.0])], np.ones((2, 1), bool), spec, DEFAULT
            )
        with pytest.raises(ValueError, match="repeats"):
            decide_gate(
                [EvaluatorOutcomes("e", [0.0], [1.0], 0)], np.ones((1, 1), bool), spec, DEFAULT
            )
        with pytest.raises(ValueError):
            DecisionPolicy(margin=0.0)
        with pytest.raises(ValueError):
            DecisionPolicy(weighting="log")  # type: ignore[arg-type]

    def test_bounds_never_change_a_verdict(self) -> None:
        base, cand = table(60, 12, 4, 24)
        with_bounds = one_cohort(base, cand)
        without = one_cohort(base, cand, with_bounds=False)
        exact = one_cohort(base, cand, exact_bounds=True)
        assert with_bounds.verdict == without.verdict == exact.verdict
        assert without.records[0].upper_bound is None
        assert exact.records[0].bound_method == "exact"
        assert exact.records[0].upper_bound == pytest.approx(
            with_bounds.records[0].upper_bound, abs=0.03
        )
