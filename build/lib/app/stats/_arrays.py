"""Array aliases and input checks shared by the stats modules.

Validation lives here so every public function fails the same way on ragged or
non-finite input instead of quietly returning NaN verdicts.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def as_float_vector(values: npt.ArrayLike, name: str, length: int | None = None) -> FloatArray:
    """A 1-D finite float64 copy of ``values``; NaN scores must be resolved upstream."""
    array = np.asarray(values, dtype=np.float64)
    _check_vector(array, name, length)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite")
    return array


def as_bool_vector(values: npt.ArrayLike, name: str, length: int | None = None) -> BoolArray:
    """A 1-D boolean view of ``values``; refuses anything that is not 0/1 or bool."""
    array = np.asarray(values)
    _check_vector(array, name, length)
    if array.dtype != np.bool_ and not np.all((array == 0) | (array == 1)):
        raise ValueError(f"{name} must hold booleans or 0/1")
    return array.astype(np.bool_)


def as_membership(membership: npt.ArrayLike, n_rows: int) -> BoolArray:
    """A (cohorts x rows) boolean matrix; one row per cohort, one column per evaluated row."""
    matrix = np.asarray(membership)
    if matrix.ndim != 2 or matrix.shape[1] != n_rows:
        raise ValueError(f"membership must have shape (cohorts, {n_rows}), got {matrix.shape}")
    if matrix.dtype != np.bool_:
        raise ValueError("membership must be a boolean matrix")
    return matrix


def _check_vector(array: npt.NDArray[np.generic], name: str, length: int | None) -> None:
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if length is not None and array.size != length:
        raise ValueError(f"{name} has {array.size} values, expected {length}")
