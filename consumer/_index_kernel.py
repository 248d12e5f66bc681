"""The compiled search of :class:`consumer.score_index.ComponentIndex` (numba, imported on first use).

Kept apart so that a consumer whose reference is small enough for brute force never imports numba
(about 80 MiB of resident memory).
"""

from __future__ import annotations

import math

import numba
import numpy as np

# A component is skipped only when its lower bound exceeds the best score found by more than this
# (relative to 1 + |score|): float64 rounding of the bounds, with a wide margin.
TOLERANCE = 1e-9
# Coordinates of a lifted vector: ComponentIndex's principal axes plus the norm of the rest. A constant,
# so that the compiler unrolls and vectorises each distance.
LIFTED_DIM = 8

# Cached on disk, no GIL, and float reassociation (for vector sums) but not finite-math assumptions:
# the search compares with infinity.
_jit = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "arcp"}, error_model="numpy")


@_jit
def _ball_bound(y, b, centre, reach, scale, bias, table, inv_step):
    """Lower bound of the scores of ball ``b``'s members (the module docstring of score_index)."""
    acc = 0.0
    for c in range(LIFTED_DIM):
        diff = y[c] - centre[b, c]
        acc += diff * diff
    t = math.sqrt(acc)
    gap = max(t - reach[b], 0.0)
    cell = min(int(t * inv_step[b]), table.shape[1] - 1)
    return max(scale[b] * gap * gap + bias[b], table[b, cell])


@_jit
def _visit_cell(x, y, c, cell_start, member, member_lifted, member_centre, member_scale, member_bias, low, low_arg):
    """Members of cell ``c`` whose lifted bound is under ``low`` are scored exactly."""
    scored = 0
    for p in range(cell_start[c], cell_start[c + 1]):
        acc = 0.0
        for k in range(LIFTED_DIM):
            diff = y[k] - member_lifted[p, k]
            acc += diff * diff
        if member_scale[p] * acc + member_bias[p] > low + TOLERANCE * (1.0 + abs(low)):
            continue
        scored += 1
        e = 0.0
        for a in range(x.shape[0]):
            diff = x[a] - member_centre[p, a]
            e += diff * diff
        value = member_scale[p] * e + member_bias[p]
        if value < low:
            low = value
            low_arg = member[p]
    return low, low_arg, scored


@_jit
def search(
    X, Y,
    g_centre, g_reach, g_scale, g_bias, g_table, g_inv_step, g_start,
    c_centre, c_reach, c_scale, c_bias, c_table, c_inv_step, c_start,
    member, member_lifted, member_centre, member_scale, member_bias, best, arg,
):  # fmt: skip
    """Branch and bound per frame over the lifted frames ``Y`` (see :mod:`consumer.score_index`):
    improves ``best``/``arg`` in place and returns the number of components scored exactly."""
    n_groups = g_centre.shape[0]
    group_bound = np.empty(n_groups)
    cell_bound = np.empty(c_centre.shape[0])
    scored = 0
    for i in range(X.shape[0]):
        x, y = X[i], Y[i]
        first = 0
        for g in range(n_groups):
            group_bound[g] = _ball_bound(y, g, g_centre, g_reach, g_scale, g_bias, g_table, g_inv_step)
            if group_bound[g] < group_bound[first]:
                first = g
        low = best[i]
        low_arg = arg[i]
        # The most promising group first (it sets a tight limit), then every group not ruled out.
        for step in range(n_groups + 1):
            g = first if step == 0 else step - 1
            if step > 0 and g == first:
                continue
            if group_bound[g] > low + TOLERANCE * (1.0 + abs(low)):
                continue
            best_cell = g_start[g]
            for c in range(g_start[g], g_start[g + 1]):
                cell_bound[c] = _ball_bound(y, c, c_centre, c_reach, c_scale, c_bias, c_table, c_inv_step)
                if cell_bound[c] < cell_bound[best_cell]:
                    best_cell = c
            for step_c in range(g_start[g + 1] - g_start[g] + 1):
                c = best_cell if step_c == 0 else g_start[g] + step_c - 1
                if step_c > 0 and c == best_cell:
                    continue
                if cell_bound[c] > low + TOLERANCE * (1.0 + abs(low)):
                    continue
                low, low_arg, k = _visit_cell(
                    x, y, c, c_start, member, member_lifted, member_centre, member_scale, member_bias, low, low_arg
                )
                scored += k
        best[i] = low
        arg[i] = low_arg
    return scored
