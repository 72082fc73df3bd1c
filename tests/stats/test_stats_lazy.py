"""The lazy stand-ins for scipy and plotly: the app imports without them, and a stand-in
reads through to the real module once used."""

from __future__ import annotations

import subprocess
import sys

from scipy import stats

from app.stats.continuous import LOGNORMAL_Z
from app.stats.lazy import LazyModule


def test_the_app_imports_without_scipy_or_plotly_and_loads_them_on_first_use() -> None:
    code = (
        "import sys\n"
        "import app.main\n"
        "assert 'scipy' not in sys.modules, sorted(m for m in sys.modules if 'scipy' in m)\n"
        "assert 'plotly' not in sys.modules, sorted(m for m in sys.modules if 'plotly' in m)\n"
        "from app.stats.reference import trim_pvalue\n"
        "print(trim_pvalue())\n"
        "assert 'scipy.stats' in sys.modules\n"
        "from app.web.figures import go, to_json\n"
        "assert '\"height\":200' in to_json(go.Figure(), 200).replace(' ', '')\n"
        "assert 'plotly.graph_objects' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_a_stand_in_reads_through_to_the_module() -> None:
    lazy = LazyModule("scipy.stats")
    assert lazy.norm is stats.norm
    assert lazy.chi2.ppf(0.5, 1) == stats.chi2.ppf(0.5, 1)
    assert "norm" in vars(lazy)  # kept after the first read


def test_the_written_out_normal_quantiles_are_scipys() -> None:
    assert {"p50": stats.norm.ppf(0.5), "p95": stats.norm.ppf(0.95)} == LOGNORMAL_Z
