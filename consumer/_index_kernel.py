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
# Coordinates of a lifted vector: ComponentIndex's principal axes plus the norm of the rest.
LIFTED_DIM = 8


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "arcp"}, error_model="numpy")
def search(
    X, Y, group_centre, group_reach, group_scale, group_bias, table, inv_step, group_start,
    member, member_lifted, member_centre, member_scale, member_bias, best, arg,
):  # fmt: skip
    """Branch and bound per frame (module docstring) over the lifted frames ``Y``; improves
    ``best``/``arg`` in place and returns the number of components scored exactly.

    Lifted vectors have ``LIFTED_DIM`` coordinates, a constant here, so that the compiler unrolls and
    vectorises each distance.
    """
    n, dim = X.shape
    n_groups = group_centre.shape[0]
    points = table.shape[1]
    bound = np.empty(n_groups)
    scored = 0
    for i in range(n):
        for g in range(n_groups):
            acc = 0.0
            for c in range(LIFTED_DIM):
                diff = Y[i, c] - group_centre[g, c]
                acc += diff * diff
            bound[g] = acc
        first = 0
        for g in range(n_groups):
            t = math.sqrt(bound[g])
            gap = max(t - group_reach[g], 0.0)
            cell = min(int(t * inv_step[g]), points - 1)
            bound[g] = max(group_scale[g] * gap * gap + group_bias[g], table[g, cell])
            if bound[g] < bound[first]:
                first = g
        low = best[i]
        low_arg = arg[i]
        for step in range(n_groups + 1):
            g = first if step == 0 else step - 1
            if step > 0 and g == first:
                continue
            if bound[g] > low + TOLERANCE * (1.0 + abs(low)):
                continue
            m0, m1 = group_start[g], group_start[g + 1]
            for p in range(m0, m1):
                acc = 0.0
                for c in range(LIFTED_DIM):
                    diff = Y[i, c] - member_lifted[p, c]
                    acc += diff * diff
                if member_scale[p] * acc + member_bias[p] > low + TOLERANCE * (1.0 + abs(low)):
                    continue
                scored += 1
                e = 0.0
                for a in range(dim):
                    diff = X[i, a] - member_centre[p, a]
                    e += diff * diff
                value = member_scale[p] * e + member_bias[p]
                if value < low:
                    low = value
                    low_arg = member[p]
        best[i] = low
        arg[i] = low_arg
    return scored
