"""Exact search for the best-scoring micro-cluster without scoring every one of them.

The density score of a frame ``x`` is a minimum over the micro-clusters (components) ``j``::

    score(x) = min_j  s_j * |x - c_j|^2_{P_j} + b_j

where ``|.|_{P_j}`` sums over the coordinates ``P_j`` that component's members had, ``s_j`` folds in
``1 / (2 r_j^2)`` and the rescaling to all coordinates, and ``b_j`` is the log-radius and density term.
Brute force is one matrix product against all K components per frame: cheap at hundreds of components,
but at 10,000 the product and the arg-min over it cost about 15 µs per frame on the benchmark machine.
:class:`ComponentIndex` returns the same minimum and component while scoring a fraction of a percent of
them, by branch and bound on lower bounds:

Lifted space
    Pose features are nearly low-dimensional (for the benchmark's 10,000 micro-clusters of the
    orientation pack, the first 7 principal axes of the centres hold 96% of their variance). With an
    orthonormal basis ``V`` of those axes, write ``x = Vp + q`` (``q`` orthogonal to them); by the
    triangle inequality in the orthogonal complement, ``|x - c|^2 >= |p_x - p_c|^2 + (|q_x| - |q_c|)^2``.
    Each vector is *lifted* to ``(p, |q|)`` in ``k + 1`` dimensions, and the lift never lengthens a
    distance.
Missing coordinates
    Components whose members never had some coordinate (rare once micro-clusters hold several
    members; 17% of the benchmark's 10,000, mostly singletons from frames with missing keypoints) are
    scored by brute force, one float32 matrix product, and the index covers the complete ones: a
    frame's deviation on the missing coordinates would loosen the group bounds too much to pay.
Groups and cells
    Complete components are grouped by k-means in the lifted space (about ``GROUP_SIZE`` per group),
    and each group again into cells of about ``CELL_SIZE``. For a ball (group or cell) with
    ``t = |lift(x) - centre|`` and ``rho_j`` a member's lifted distance from the centre, each member's
    score is at least ``s_j * max(0, t - rho_j)^2 + b_j``. The minimum over the members, ``f(t)``,
    grows with ``t``; it is tabulated at build time, and ``s_min * max(0, t - max rho)^2 + b_min``
    covers ``t`` beyond the table.

Per frame, the compiled kernel (:mod:`consumer._index_kernel`, numba) starts from the brute-force
minimum over the incomplete components, visits the group with the lowest bound (its best cell first),
then every other group whose bound is below the best score so far, inside it the cells whose bound is,
and inside those the members whose own lifted bound is. A
component is skipped only when a bound proves it cannot win, so the result is the brute-force minimum
(up to float rounding). ``edgeloop bench`` reports the throughput at 100, 1,000 and 10,000
micro-clusters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from edgeloop.kmeans import kmeans

__all__ = ["ComponentIndex"]

LIFT_COMPONENTS = 7  # principal axes; + 1 for the rest: consumer._index_kernel.LIFTED_DIM
KMEANS_ITERATIONS = 10  # Lloyd iterations at most: the grouping only has to be good, not converged
# Components per group and per cell (k-means targets), and the grid size of each ball's tabulated bound.
GROUP_SIZE = 96
CELL_SIZE = 8
TABLE_POINTS = 64


@dataclass(frozen=True)
class Balls:
    """Lifted balls (groups or cells) and what their lower bounds need; see the module docstring."""

    centre: np.ndarray  # (B, k + 1)
    reach: np.ndarray  # (B,) largest lifted distance of a member from the centre
    scale: np.ndarray  # (B,) smallest member s
    bias: np.ndarray  # (B,) smallest member b
    table: np.ndarray  # (B, TABLE_POINTS) f(t) on a grid of t
    inv_step: np.ndarray  # (B,) 1 / grid step
    start: np.ndarray  # (B + 1,) the ball's children (cells, or member rows) are start[i]:start[i + 1]

    @classmethod
    def build(
        cls, lifted: np.ndarray, s: np.ndarray, b: np.ndarray, parts: list[np.ndarray], children: np.ndarray
    ) -> Balls:
        """Balls around ``parts`` (row indices into ``lifted``/``s``/``b``); ``children`` delimits each one's."""
        centre = np.array([lifted[g].mean(axis=0) for g in parts])
        rho = [np.sqrt(((lifted[g] - centre[i]) ** 2).sum(axis=1)) for i, g in enumerate(parts)]
        reach = np.array([r.max() for r in rho])
        step = np.maximum(2.0 * reach, 1e-12) / (TABLE_POINTS - 1)
        grid = np.arange(TABLE_POINTS, dtype=np.float64)
        table = np.array(
            [
                (s[g][None, :] * np.maximum(grid[:, None] * step[i] - rho[i][None, :], 0.0) ** 2 + b[g][None, :]).min(
                    axis=1
                )
                for i, g in enumerate(parts)
            ]
        )
        return cls(
            centre=np.ascontiguousarray(centre),
            reach=reach,
            scale=np.array([s[g].min() for g in parts]),
            bias=np.array([b[g].min() for g in parts]),
            table=table,
            inv_step=1.0 / step,
            start=children,
        )

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.centre, self.reach, self.scale, self.bias, self.table, self.inv_step, self.start


@dataclass(frozen=True)
class ComponentIndex:
    """Three-level index over components ``(centre, presence mask, scale s, bias b)``; see the module doc.

    Build it with :meth:`build`; :meth:`search` takes *complete* frames (no missing coordinate) in the
    same shifted coordinates as the centres. Members are stored cell after cell and cells group after
    group, so that the compiled search walks contiguous memory.
    """

    basis: np.ndarray  # (D, k) orthonormal principal axes of the complete centres
    groups: Balls  # children: cells
    cells: Balls  # children: member rows
    member: np.ndarray  # (Kc,) component index of each member row
    member_lifted: np.ndarray  # (Kc, k + 1) lifted centres
    member_centre: np.ndarray  # (Kc, D)
    member_scale: np.ndarray  # (Kc,)
    member_bias: np.ndarray  # (Kc,)
    rest: np.ndarray  # components with missing coordinates: scored by brute force
    rest_exact: np.ndarray  # float32: [x, |x|^2, 1, squares of x per missing unit] @ rest_exact = their scores
    rest_pairs: bool  # missing coordinates come in (x, y) pairs: the product needs 17 squares, not 34
    rest_centre: np.ndarray  # (len(rest), D) float64, to rescore the winner exactly
    rest_mask: np.ndarray  # (len(rest), D) float64
    rest_scale: np.ndarray
    rest_bias: np.ndarray

    @property
    def n_groups(self) -> int:
        return int(self.groups.centre.shape[0])

    @property
    def n_cells(self) -> int:
        return int(self.cells.centre.shape[0])

    @classmethod
    def build(
        cls,
        centres: np.ndarray,
        present: np.ndarray,
        scale: np.ndarray,
        bias: np.ndarray,
        seed: int = 0,
    ) -> ComponentIndex:
        """Index components: ``centres`` (K, D) with 0 where ``present`` is False, ``scale``/``bias`` (K,)."""
        C = np.array(centres, dtype=np.float64)
        M = np.asarray(present, dtype=bool)
        s = np.asarray(scale, dtype=np.float64)
        b = np.asarray(bias, dtype=np.float64)
        complete = M.all(axis=1)
        indexed, rest = np.flatnonzero(complete), np.flatnonzero(~complete)
        if indexed.size == 0:
            raise ValueError("no complete component to index")
        C[~M] = 0.0
        Cc, sc, bc = C[indexed], s[indexed], b[indexed]
        _, _, vt = np.linalg.svd(Cc - Cc.mean(axis=0), full_matrices=False)
        basis = np.zeros((C.shape[1], LIFT_COMPONENTS))  # fewer axes than that: zero columns lift to 0
        axes = min(LIFT_COMPONENTS, vt.shape[0])
        basis[:, :axes] = vt[:axes].T
        lifted = _lift(Cc, basis)
        groups = _kmeans_groups(lifted, round(lifted.shape[0] / GROUP_SIZE), seed)  # rows of Cc
        cells: list[np.ndarray] = []
        cells_per_group = [0]
        for i, g in enumerate(groups):
            parts = [g[c] for c in _kmeans_groups(lifted[g], round(g.size / CELL_SIZE), seed + 1 + i)]
            cells.extend(parts)
            cells_per_group.append(cells_per_group[-1] + len(parts))
        order = np.concatenate(cells)  # member rows: cell after cell
        members_per_cell = np.concatenate([[0], np.cumsum([c.size for c in cells])]).astype(np.int64)
        # Balls index the member rows in `order`.
        position = np.empty(order.size, dtype=np.int64)
        position[order] = np.arange(order.size)
        lifted_o, s_o, b_o = lifted[order], sc[order], bc[order]
        cell_rows = [position[c] for c in cells]
        group_rows = [position[g] for g in groups]
        # s_j * (|x|^2 - sum of x_a^2 over the missing a - 2 x.c_j + |c_j|^2) + b_j, with c_j = 0 where missing.
        pairs = bool((M[:, 0::2] == M[:, 1::2]).all()) if C.shape[1] % 2 == 0 else False
        missing = (~M[:, 0::2] if pairs else ~M).astype(np.float64)
        rest_w = np.hstack(
            [-2.0 * C * s[:, None], s[:, None], ((C * C).sum(axis=1) * s + b)[:, None], -missing * s[:, None]]
        )
        index = cls(
            basis=basis,
            groups=Balls.build(lifted_o, s_o, b_o, group_rows, np.asarray(cells_per_group, dtype=np.int64)),
            cells=Balls.build(lifted_o, s_o, b_o, cell_rows, members_per_cell),
            member=indexed[order],
            member_lifted=np.ascontiguousarray(lifted_o),
            member_centre=np.ascontiguousarray(Cc[order]),
            member_scale=s_o.copy(),
            member_bias=b_o.copy(),
            rest=rest,
            rest_exact=np.ascontiguousarray(rest_w[rest].T, dtype=np.float32),
            rest_pairs=pairs,
            rest_centre=C[rest],
            rest_mask=M[rest].astype(np.float64),
            rest_scale=s[rest],
            rest_bias=b[rest],
        )
        index.search(np.zeros((1, C.shape[1])))  # compiles the kernel now (or loads it), not on a batch
        return index

    def search(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        """``(best score, best component, components scored)`` for complete shifted frames ``X`` (n, D)."""
        from consumer._index_kernel import search as compiled  # numba: imported only once an index is used

        search = cast(Any, compiled)  # a numba dispatcher; its arguments are the flat arrays below

        X = np.ascontiguousarray(X, dtype=np.float64)
        n = X.shape[0]
        best = np.full(n, np.inf)
        arg = np.full(n, -1, dtype=np.int64)
        scored = 0
        if self.rest.size and n:
            squares = X * X
            per_missing = squares[:, 0::2] + squares[:, 1::2] if self.rest_pairs else squares
            S = np.hstack([X, squares.sum(axis=1, keepdims=True), np.ones((n, 1)), per_missing]).astype(np.float32)
            S = S @ self.rest_exact
            j = S.argmin(axis=1)
            # The float32 product picks the winner; its score is recomputed in float64, like the kernel's.
            diff = X - self.rest_centre[j]
            best[:] = self.rest_scale[j] * (diff * diff * self.rest_mask[j]).sum(axis=1) + self.rest_bias[j]
            arg[:] = self.rest[j]
            scored += S.size
        scored += search(
            X,
            _lift(X, self.basis),
            *self.groups.arrays(),
            *self.cells.arrays(),
            self.member,
            self.member_lifted,
            self.member_centre,
            self.member_scale,
            self.member_bias,
            best,
            arg,
        )
        return best, arg, int(scored)


def _lift(X: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """``(n, k + 1)``: coordinates on the principal axes and the norm of the rest."""
    p = X @ basis
    rest = np.maximum((X * X).sum(axis=1) - (p * p).sum(axis=1), 0.0)
    return np.hstack([p, np.sqrt(rest)[:, None]])


def _kmeans_groups(Y: np.ndarray, k: int, seed: int) -> list[np.ndarray]:
    """The row indices of ``Y``'s groups under k-means into ``k`` groups (clipped to 1..len(Y)), seeded."""
    k = max(1, min(Y.shape[0], k))
    labels = kmeans(Y, k, n_init=1, random_state=seed, max_iter=KMEANS_ITERATIONS).labels
    order = np.argsort(labels, kind="stable")
    edges = np.searchsorted(labels[order], np.arange(k + 1))
    return [order[edges[g] : edges[g + 1]] for g in range(k) if edges[g + 1] > edges[g]]
