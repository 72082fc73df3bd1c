"""The lazy stand-ins for scipy: the app imports without scipy, and a stand-in reads through
to the real module once used."""

from __future__ import annotations

import subprocess
import sys

from scipy import stats

from app.stats.lazy import LazyModule


def test_the_app_imports_without_scipy_and_loads_it_on_first_use() -> None:
    code = (
        "import sys\n"
        "import app.main\n"
        "assert 'scipy' not in sys.modules, sorted(m for m in sys.modules if 'scipy' in m)\n"
        "from app.stats.rates import rate_band\n"
        "print(rate_band(0.1, 100))\n"
        "assert 'scipy.stats' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_a_stand_in_reads_through_to_the_module() -> None:
    lazy = LazyModule("scipy.stats")
    assert lazy.norm is stats.norm
    assert lazy.chi2.ppf(0.5, 1) == stats.chi2.ppf(0.5, 1)
    assert "norm" in vars(lazy)  # kept after the first read
