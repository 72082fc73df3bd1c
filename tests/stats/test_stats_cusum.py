"""app.stats.cusum: hand-computed updates, Siegmund against a Brook-Evans Markov chain."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from app.stats.cusum import (
    cusum_threshold,
    cusum_update,
    reference_error_sd,
    release_level,
    siegmund_arl,
)


def brook_evans_arl(h: float, k: float, shift: float = 0.0, states: int = 400) -> float:
    """ARL of the CUSUM started at 0 with N(shift, 1) increments (Brook & Evans 1972)."""
    w = 2.0 * h / (2 * states - 1)
    centres = np.arange(states) * w
    upper_edges = (np.arange(states) + 0.5) * w
    cdf = stats.norm.cdf(upper_edges[None, :] - centres[:, None] + k - shift)
    transition = np.diff(np.concatenate([np.zeros((states, 1)), cdf], axis=1), axis=1)
    arl = np.linalg.solve(np.eye(states) - transition, np.ones(states))
    return float(arl[0])


def test_update_by_hand() -> None:
    s = np.array([0.0])
    seen = []
    for z in (1.5, 0.2, 2.0, -3.0, np.nan, 0.9):
        s = cusum_update(s, [z], k=0.5)
        seen.append(float(s[0]))
    # 0+1.5-.5=1.0; 1.0+.2-.5=.7; .7+2-.5=2.2; 2.2-3-.5<0 -> 0; no data -> 0; .9-.5=.4
    assert seen == pytest.approx([1.0, 0.7, 2.2, 0.0, 0.0, 0.4])


def test_update_is_capped_and_vectorised() -> None:
    s = cusum_update([0.0, 3.0, 1.0], [5.0, 5.0, np.nan], k=[1.0, 1.0, 1.0], cap=[2.5, 6.0, 0.5])
    np.testing.assert_allclose(s, [2.5, 6.0, 1.0])
    with pytest.raises(ValueError):
        cusum_update([-1.0], [0.0])


@pytest.mark.parametrize(
    ("h", "k", "shift"),
    [(4.0, 0.5, 0.0), (5.0, 0.5, 0.0), (5.2, 1.0, 0.0), (5.0, 0.5, 1.0), (6.7, 1.0, 2.0)],
)
def test_siegmund_is_within_a_few_percent_of_the_markov_chain(
    h: float, k: float, shift: float
) -> None:
    exact = brook_evans_arl(h, k, shift)
    # Siegmund overstates ARL0 by up to ~6% at k = 1 (so h is a little low), less for k = 0.5.
    assert float(siegmund_arl(h, k, shift)) == pytest.approx(exact, rel=0.08)


def test_textbook_in_control_arls() -> None:
    # k = 0.5: h = 4 gives ~336 and h = 5 ~930 days (Montgomery, Table 9.3).
    assert brook_evans_arl(4.0, 0.5) == pytest.approx(336, rel=0.01)
    assert brook_evans_arl(5.0, 0.5) == pytest.approx(930, rel=0.01)


def test_threshold_inverts_siegmund() -> None:
    arl0 = np.array([100.0, 930.0, 1e4, 1.7e5])
    for k in (0.5, 1.0):
        h = cusum_threshold(arl0, k)
        np.testing.assert_allclose(siegmund_arl(h, k), arl0, rtol=1e-8)
    assert np.isinf(cusum_threshold(np.inf))


def test_threshold_averaged_over_the_reference_error() -> None:
    arl0, k, sd = 1.7e5, 1.0, 0.19
    h = float(cusum_threshold(arl0, k, sd))

    def rate(b: float) -> float:
        return float(stats.norm.pdf(b, scale=sd) / siegmund_arl(h, k, b))

    average, _ = integrate.quad(rate, -10 * sd, 10 * sd, limit=200)
    assert average == pytest.approx(1.0 / arl0, rel=1e-3)
    plain = float(cusum_threshold(arl0, k))
    assert plain < h < float(cusum_threshold(arl0, k, 0.3))
    assert float(cusum_threshold(arl0, k, 0.0)) == pytest.approx(plain)


def test_reference_error_and_release_level() -> None:
    np.testing.assert_allclose(reference_error_sd([4, 28, 100]), [0.5, 1 / np.sqrt(28), 0.1])
    np.testing.assert_allclose(release_level([6.0, 8.0]), [3.0, 4.0])
    with pytest.raises(ValueError):
        release_level(6.0, 1.5)
