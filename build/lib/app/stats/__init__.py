"""Statistics behind the checkpoint gate and the drift monitors (numpy/scipy only).

The methods, formulas and defaults are argued in docs/statistics.md.
"""
