"""``edgeloop report``: pictures of a finished run, as PNGs and one self-contained HTML page.

Reads a run directory (``edgeloop demo --out DIR`` writes one) and draws:

- ``reference_clusters.png``: the reference micro-clusters as skeletons, the most supported first, each
  drawn with a line weight and a bar in proportion to its support (its weight);
- ``edge_cases.png``: the collected edge cases as skeletons, in the same feature space, coloured by
  their label;
- ``ood_rate.png``: the OOD (flagged) rate over the stream, with the model swaps marked;
- ``accuracy.png``: golden-set accuracy per model version, and the OOD rate under each version.

``report.html`` embeds the PNGs (base64), so the one file can be mailed or attached to a ticket; the
PNGs are also kept in ``DIR/pictures/``.

The run directory (what is absent is left out of the report, with a note saying so)::

    report.json                   the demo's summary (frames, edge cases, versions, ...)
    reference.json                {"features", "centres": [[34 floats]], "weights": [...], "radii": [...]}
    decisions/*.jsonl             one line per scored frame: id, seq, partition, offset, version, flagged, ...
    decisions*.jsonl              (same, directly in DIR)
    registry/v000000.json ...     model registry metadata (version, golden_accuracy, trained_on, ...)
    registry/edge-cases.jsonl     the retrainer's durable buffer ({"type": "edge_case", "frame": {...}})
"""

from __future__ import annotations

import argparse
import base64
import html
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from edgeloop.errors import EdgeloopError
from edgeloop.features import normalise_pose
from edgeloop.frames import N_COORDS, SKELETON

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
PICTURES_DIR = "pictures"
REFERENCE_FILE = "reference.json"
SUMMARY_FILE = "report.json"
MAX_SKELETONS = 24
GRID_COLUMNS = 6
# Label colours: vertical body (gt 0), horizontal body (gt 1), unlabelled.
LABEL_COLOURS = {0: "#1f77b4", 1: "#ff7f0e", None: "#7f7f7f"}
LABEL_NAMES = {0: "vertical", 1: "horizontal", None: "unlabelled"}
VERSION_COLOURS = ("#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
_EDGES = np.asarray(SKELETON, dtype=np.int64)


class ReportError(EdgeloopError):
    """The run directory cannot be reported on (missing, or with unreadable files)."""


# --------------------------------------------------------------------------------------------- reading


@dataclass
class RunData:
    """What a run directory holds, as arrays (each part empty when its files are absent)."""

    run_dir: Path
    summary: dict[str, Any] = field(default_factory=dict)
    reference_features: str | None = None
    centres: np.ndarray = field(default_factory=lambda: np.empty((0, N_COORDS)))
    weights: np.ndarray = field(default_factory=lambda: np.empty(0))
    radii: np.ndarray = field(default_factory=lambda: np.empty(0))
    # decisions, sorted by the producer's sequence number
    seq: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    flagged: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=bool))
    version: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    partition: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    versions: list[dict[str, Any]] = field(default_factory=list)
    edge_kps: np.ndarray = field(default_factory=lambda: np.empty((0, N_COORDS)))
    edge_gt: list[int | None] = field(default_factory=list)
    edge_score: np.ndarray = field(default_factory=lambda: np.empty(0))
    edge_ids: list[int] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ReportError(f"{path} is not valid JSON ({exc}); was the run interrupted while writing it?") from None


def _jsonl(paths: Iterable[Path]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for path in paths:
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    # A torn last line (a process killed mid-write) is expected; anything else is not.
                    log.warning("%s:%d: skipping an unreadable line", path, number)
    return rows


def read_run(run_dir: Path) -> RunData:
    """Everything :func:`write_report` draws, read from ``run_dir``."""
    if not run_dir.is_dir():
        raise ReportError(f"run directory {run_dir} does not exist; run `edgeloop demo --out {run_dir}` first")
    data = RunData(run_dir)
    if (run_dir / SUMMARY_FILE).is_file():
        data.summary = dict(_read_json(run_dir / SUMMARY_FILE))
    _read_reference(data)
    _read_decisions(data)
    _read_registry(data)
    return data


def _read_reference(data: RunData) -> None:
    path = data.run_dir / REFERENCE_FILE
    if not path.is_file():
        data.notes.append(f"no {REFERENCE_FILE}: the reference micro-clusters are not drawn")
        return
    ref = _read_json(path)
    try:
        centres = np.asarray(ref["centres"], dtype=np.float64).reshape(-1, N_COORDS)
        weights = np.asarray(ref["weights"], dtype=np.float64).reshape(-1)
        radii = np.asarray(ref.get("radii", np.zeros(len(weights))), dtype=np.float64).reshape(-1)
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(
            f"{path} must hold centres (rows of {N_COORDS} numbers) and weights: {type(exc).__name__}: {exc}"
        ) from None
    if len(centres) != len(weights):
        raise ReportError(f"{path}: {len(centres)} centres but {len(weights)} weights")
    data.reference_features = str(ref.get("features", "pose"))
    data.centres, data.weights, data.radii = centres, weights, radii


def _read_decisions(data: RunData) -> None:
    paths = sorted((data.run_dir / "decisions").glob("*.jsonl")) + sorted(data.run_dir.glob("decisions*.jsonl"))
    rows = _jsonl(paths)
    if not rows:
        data.notes.append("no decision log (decisions/*.jsonl): the OOD rate over the stream is not drawn")
        return
    seq = np.asarray([r.get("seq") if r.get("seq") is not None else -1 for r in rows], dtype=np.int64)
    order = np.argsort(seq, kind="stable")
    data.seq = seq[order]
    data.flagged = np.asarray([bool(r["flagged"]) for r in rows], dtype=bool)[order]
    data.version = np.asarray([int(r["version"]) for r in rows], dtype=np.int64)[order]
    data.partition = np.asarray([int(r.get("partition", 0)) for r in rows], dtype=np.int64)[order]


def _read_registry(data: RunData) -> None:
    registry = data.run_dir / "registry"
    if not registry.is_dir():
        data.notes.append("no registry/: versions and edge cases are not drawn")
        return
    # The metadata files are read as JSON (not through ModelRegistry): a report needs no model loaded.
    for path in sorted(registry.glob("v[0-9][0-9][0-9][0-9][0-9][0-9]*.json")):
        meta = _read_json(path)
        if isinstance(meta, dict) and "version" in meta:
            data.versions.append(meta)
    data.versions.sort(key=lambda m: int(m["version"]))
    cases: dict[int, dict[str, Any]] = {}
    labels: dict[int, int] = {}
    for row in _jsonl(sorted(registry.glob("*.jsonl"))):
        kind = row.get("type")
        if kind == "edge_case" and isinstance(row.get("frame"), dict) and "kps" in row["frame"]:
            cases.setdefault(int(row["id"]), row)  # the buffer never holds an id twice; be safe anyway
        elif kind == "label" and row.get("gt") is not None:
            labels[int(row["id"])] = int(row["gt"])
    if not cases:
        data.notes.append("no edge cases in the registry's buffer")
        return
    rows = list(cases.values())
    data.edge_ids = [int(r["id"]) for r in rows]
    data.edge_kps = np.asarray([r["frame"]["kps"] for r in rows], dtype=np.float64).reshape(-1, N_COORDS)
    data.edge_gt = [labels.get(int(r["id"]), None if r.get("gt") is None else int(r["gt"])) for r in rows]
    data.edge_score = np.asarray([float(r["frame"].get("score", np.nan)) for r in rows], dtype=np.float64)


# --------------------------------------------------------------------------------------------- drawing


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # Agg: no display needed, no global pyplot state
    return figure


def skeleton_segments(points: np.ndarray) -> np.ndarray:
    """``(n_bones, 2, 2)`` line segments of one ``(34,)`` pose; bones with a missing end are dropped."""
    xy = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    segments = xy[_EDGES]  # (bones, 2 ends, xy)
    return segments[np.isfinite(segments).all(axis=(1, 2))]


def _draw_skeleton(ax: Axes, pose: np.ndarray, colour: str, linewidth: float) -> None:
    ax.add_collection(LineCollection(list(skeleton_segments(pose)), colors=colour, linewidths=linewidth))
    xy = pose.reshape(-1, 2)
    ax.scatter(xy[:, 0], xy[:, 1], s=6, color=colour, zorder=3)
    head = xy[0]
    if np.isfinite(head).all():
        ax.scatter([head[0]], [head[1]], s=30, facecolors="none", edgecolors=colour, zorder=3)


def _in_feature_space(kps: np.ndarray, features: str) -> np.ndarray:
    """Keypoints as the reference sees them: normalised pose space, or pixels with (0, 0) = missing."""
    if features == "pose":
        return normalise_pose(kps)
    out = np.array(kps, dtype=np.float64, copy=True).reshape(-1, N_COORDS)
    points = out.reshape(len(out), -1, 2)
    points[(points == 0).all(axis=2)] = np.nan
    return out


def _limits(poses: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """Common axis limits for a grid of poses (robust to an outlying keypoint)."""
    xy = poses.reshape(len(poses), -1, 2)
    xs, ys = xy[:, :, 0], xy[:, :, 1]
    if not np.isfinite(xs).any():
        return (-1.0, 1.0), (-1.0, 1.0)
    lo_x, hi_x = np.nanpercentile(xs, [0.5, 99.5])
    lo_y, hi_y = np.nanpercentile(ys, [0.5, 99.5])
    span = max(hi_x - lo_x, hi_y - lo_y, 1e-6) * 0.55
    cx, cy = (lo_x + hi_x) / 2, (lo_y + hi_y) / 2
    # Image coordinates grow downwards: the y axis is flipped so that a standing body stands.
    return (cx - span, cx + span), (cy + span, cy - span)


def _skeleton_grid(
    poses: np.ndarray, colours: Sequence[str], widths: Sequence[float], titles: Sequence[str], heading: str
) -> tuple[Figure, list[Axes]]:
    n = len(poses)
    cols = min(GRID_COLUMNS, max(n, 1))
    rows = max(1, -(-n // cols))
    figure = _new_figure(2.0 * cols, 2.25 * rows + 0.5)
    figure.suptitle(heading, fontsize=11)
    xlim, ylim = _limits(poses) if n else ((-1.0, 1.0), (1.0, -1.0))
    axes: list[Axes] = []
    for i in range(rows * cols):
        ax = figure.add_subplot(rows, cols, i + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.set_aspect("equal")
        if i < n:
            _draw_skeleton(ax, poses[i], colours[i], widths[i])
            ax.set_title(titles[i], fontsize=8)
        else:
            ax.set_axis_off()
        axes.append(ax)
    return figure, axes


def draw_reference(data: RunData, path: Path) -> Path | None:
    """The most supported reference micro-clusters as skeletons; line weight and bar = support."""
    if not len(data.centres):
        return None
    order = np.argsort(-data.weights, kind="stable")[:MAX_SKELETONS]
    total = float(data.weights.sum()) or 1.0
    share = data.weights[order] / total
    widths = 0.6 + 3.4 * share / max(float(share.max()), 1e-12)
    titles = [f"#{int(i)}  support {data.weights[i]:.0f} ({100 * s:.1f}%)" for i, s in zip(order, share, strict=True)]
    shown = float(share.sum())
    heading = (
        f"Reference: {len(data.centres)} micro-clusters ({data.reference_features} features); "
        f"the {len(order)} most supported (line weight, green bar) hold {100 * shown:.0f}% of {total:.0f} points"
    )
    figure, axes = _skeleton_grid(data.centres[order], ["#333333"] * len(order), widths.tolist(), titles, heading)
    for ax, s in zip(axes, share, strict=False):
        # A support bar along the bottom of each cell, full width = the largest cluster.
        ax.add_patch(_support_bar(ax, float(s / share.max())))
    figure.savefig(path)
    return path


def _support_bar(ax: Axes, fraction: float) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((0.0, 0.0), fraction, 0.05, transform=ax.transAxes, color="#2ca02c", alpha=0.8, clip_on=False)


def draw_edge_cases(data: RunData, path: Path) -> Path | None:
    """The collected edge cases as skeletons, in the reference's feature space, coloured by label."""
    if not len(data.edge_kps):
        return None
    features = data.reference_features or "pose"
    # The highest-scoring (most out-of-distribution) first.
    score = np.nan_to_num(data.edge_score, nan=-np.inf)
    order = np.argsort(-score, kind="stable")[:MAX_SKELETONS]
    poses = _in_feature_space(data.edge_kps[order], features)
    gts = [data.edge_gt[i] for i in order]
    colours = [LABEL_COLOURS[g] for g in gts]
    titles = [
        f"id {data.edge_ids[i]}\n{LABEL_NAMES[g]}, score {data.edge_score[i]:.2f}"
        for i, g in zip(order, gts, strict=True)
    ]
    counts = {name: sum(1 for g in data.edge_gt if LABEL_NAMES[g] == name) for name in LABEL_NAMES.values()}
    heading = (
        f"Edge cases collected: {len(data.edge_kps)} "
        f"({', '.join(f'{v} {k}' for k, v in counts.items() if v)}); the {len(order)} highest-scoring, "
        f"{features} features"
    )
    figure, _ = _skeleton_grid(poses, colours, [1.6] * len(order), titles, heading)
    figure.savefig(path)
    return path


def _rolling_rate(flags: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean of ``flags`` over ``window`` frames (shorter at the start), vectorised."""
    cumulative = np.concatenate([[0.0], np.cumsum(flags, dtype=np.float64)])
    idx = np.arange(1, len(flags) + 1)
    start = np.maximum(idx - window, 0)
    return (cumulative[idx] - cumulative[start]) / (idx - start)


def swap_points(seq: np.ndarray, version: np.ndarray, partition: np.ndarray | None = None) -> dict[int, list[int]]:
    """``{version: [first stream position it decided, per partition]}`` for every version after the first.

    With several consumers each swaps on its own, so a version starts at a different point of the stream
    on each partition; the list is sorted, its first element is where the version was first seen.
    """
    parts = np.zeros(len(seq), dtype=np.int64) if partition is None else partition
    swaps: dict[int, list[int]] = {}
    for v in np.unique(version)[1:]:
        mask = version == v
        swaps[int(v)] = sorted(int(seq[mask & (parts == p)].min()) for p in np.unique(parts[mask]))
    return swaps


def draw_ood_rate(data: RunData, path: Path) -> Path | None:
    """The flagged rate over the stream (trailing window per serving version), swaps marked."""
    if not len(data.seq):
        return None
    n = len(data.seq)
    window = int(min(max(50, n // 60), 1000))
    figure = _new_figure(11, 4.6)
    ax = figure.add_subplot(1, 1, 1)
    x = data.seq if (data.seq >= 0).all() else np.arange(n)
    highest = 0.05
    for i, v in enumerate(np.unique(data.version)):
        mask = data.version == v
        # Each version's rate over the frames it decided: while a swap rolls out over the partitions
        # both versions decide interleaved frames, and one mixed window would blur the two.
        rate = _rolling_rate(data.flagged[mask].astype(np.float64), window)
        rate[: min(window // 2, len(rate) - 1)] = np.nan  # too few frames yet for a meaningful rate
        share = float(data.flagged[mask].mean())
        ax.plot(x[mask], rate, color=VERSION_COLOURS[i % len(VERSION_COLOURS)], linewidth=1.4,
                label=f"served by v{int(v)}: OOD {100 * share:.1f}% of {int(mask.sum())} frames")  # fmt: skip
        if np.isfinite(rate).any():
            highest = max(highest, float(np.nanmax(rate)))
    for v, starts in swap_points(x, data.version, data.partition).items():
        ax.axvline(starts[0], color="black", linestyle="--", linewidth=1)
        if starts[-1] > starts[0]:
            ax.axvspan(starts[0], starts[-1], color="black", alpha=0.08, linewidth=0)
        where = f" ({len(starts)} partitions by frame {starts[-1]})" if len(starts) > 1 else ""
        ax.annotate(
            f"swap to v{v}{where}", (starts[0], 1.0), xycoords=("data", "axes fraction"), xytext=(4, -14),
            textcoords="offset points", fontsize=9,
        )  # fmt: skip
    ax.set_xlabel("frame in the stream (producer sequence number)")
    ax.set_ylabel(f"OOD rate, trailing {window} frames")
    ax.set_ylim(0, highest * 1.25)
    ax.yaxis.set_major_formatter(_percent_formatter())
    ax.set_title(f"Out-of-distribution rate over the stream: {n} frames scored, {int(data.flagged.sum())} flagged")
    # Below the plot: inside it would hide the curves or the swap labels.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=4, fontsize=9, frameon=False)
    ax.grid(alpha=0.3)
    figure.savefig(path)
    return path


def _percent_text(value: float, _position: int) -> str:
    return f"{100 * value:.0f}%"


def _percent_formatter() -> Any:
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(_percent_text)


def draw_accuracy(data: RunData, path: Path) -> Path | None:
    """Golden-set accuracy per version, and the OOD rate while each version served."""
    measured = [m for m in data.versions if m.get("golden_accuracy") is not None]
    if not measured and not len(data.version):
        return None
    figure = _new_figure(11, 4.0)
    left = figure.add_subplot(1, 2, 1)
    labels = [f"v{int(m['version'])}" for m in measured]
    accuracy = [float(m["golden_accuracy"]) for m in measured]
    bars = left.bar(labels, accuracy, color=[VERSION_COLOURS[i % len(VERSION_COLOURS)] for i in range(len(labels))])
    for bar, value, meta in zip(bars, accuracy, measured, strict=True):
        trained = meta.get("trained_on") or {}
        left.annotate(
            f"{100 * value:.1f}%\n+{trained.get('edge_cases', 0)} edge cases",
            (bar.get_x() + bar.get_width() / 2, value),
            ha="center", va="bottom", fontsize=9, xytext=(0, 2), textcoords="offset points",
        )  # fmt: skip
    bottom = max(0.0, min(accuracy, default=0.0) - 0.15)
    left.set_ylim(bottom, 1.08)  # headroom for the labels above a 100 % bar, but no tick above 100 %
    left.set_yticks([t for t in np.linspace(0.0, 1.0, 21) if t >= bottom - 1e-9])
    left.yaxis.set_major_formatter(_percent_formatter())
    left.set_title("Golden-set accuracy per version")
    left.grid(axis="y", alpha=0.3)
    if not measured:
        left.text(0.5, 0.5, "no golden accuracy recorded", ha="center", va="center", transform=left.transAxes)
    right = figure.add_subplot(1, 2, 2)
    if len(data.version):
        versions = np.unique(data.version)
        rates = [float(data.flagged[data.version == v].mean()) for v in versions]
        frames = [int((data.version == v).sum()) for v in versions]
        bars = right.bar([f"v{int(v)}" for v in versions], rates, color="#7f7f7f")
        for bar, rate, count in zip(bars, rates, frames, strict=True):
            right.annotate(
                f"{100 * rate:.1f}%\n{count} frames", (bar.get_x() + bar.get_width() / 2, rate), ha="center",
                va="bottom", fontsize=9, xytext=(0, 2), textcoords="offset points",
            )  # fmt: skip
        right.set_ylim(0, max(rates) * 1.35 + 1e-3)
        right.yaxis.set_major_formatter(_percent_formatter())
    right.set_title("OOD rate while each version served")
    right.grid(axis="y", alpha=0.3)
    figure.savefig(path)
    return path


# --------------------------------------------------------------------------------------------- HTML


def _summary_rows(data: RunData) -> list[tuple[str, str]]:
    keys = (
        "frames_replayed", "frames_scored", "edge_cases", "dead_letters", "flagged_frames", "flag_rate",
        "v0_error_rate_stream", "v0_error_rate_among_flagged", "samples_before_first_retrain", "elapsed_s",
    )  # fmt: skip
    rows = []
    for key in keys:
        if key in data.summary:
            value = data.summary[key]
            text = f"{value:.4g}" if isinstance(value, float) else str(value)
            rows.append((key.replace("_", " "), text))
    for meta in data.versions:
        accuracy = meta.get("golden_accuracy")
        trained = meta.get("trained_on") or {}
        rows.append(
            (
                f"version {int(meta['version'])}",
                f"golden accuracy {'n/a' if accuracy is None else f'{100 * float(accuracy):.2f}%'}; trained on "
                f"{trained.get('training', '?')} training + {trained.get('edge_cases', '?')} edge cases; "
                f"{meta.get('created_at', '')}",
            )
        )
    return rows


CAPTIONS = {
    "reference_clusters.png": "The reference micro-clusters (the training distribution the stream is compared "
    "with), drawn as skeletons at their centres; line weight and the green bar show each one's support.",
    "edge_cases.png": "Edge cases the consumers flagged and the retrainer collected, in the same feature space; "
    "colour = label (blue vertical, orange horizontal, grey unlabelled).",
    "ood_rate.png": "Share of frames flagged out-of-distribution over the stream; dashed lines mark where a new "
    "model version started serving (and its training data joined the reference).",
    "accuracy.png": "Golden-set accuracy of each published version, and the OOD rate while each one served.",
}


def _html(data: RunData, pictures: list[Path]) -> str:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8"><title>edgeloop run report</title>',
        "<style>body{font-family:system-ui,sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse}td{padding:2px 12px;border-bottom:1px solid #ddd}"
        "img{max-width:100%;border:1px solid #eee}figure{margin:1.5em 0}figcaption{color:#555}</style>",
        "</head><body>",
        "<h1>edgeloop run report</h1>",
        f"<p>Run directory <code>{html.escape(str(data.run_dir))}</code>, written "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}.</p>",
    ]
    rows = _summary_rows(data)
    if rows:
        parts.append("<h2>Summary</h2><table>")
        parts += [f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows]
        parts.append("</table>")
    parts.append("<h2>Pictures</h2>")
    for picture in pictures:
        encoded = base64.b64encode(picture.read_bytes()).decode("ascii")
        caption = CAPTIONS.get(picture.name, picture.name)
        parts.append(
            f'<figure><img alt="{html.escape(picture.stem)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{html.escape(caption)} (<code>{PICTURES_DIR}/{html.escape(picture.name)}</code>)"
            "</figcaption></figure>"
        )
    if data.notes:
        parts.append("<h2>Not drawn</h2><ul>")
        parts += [f"<li>{html.escape(note)}</li>" for note in data.notes]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Draw the run's pictures into ``run_dir/pictures/`` and write the HTML report; return its path.

    Parameters
    ----------
    run_dir
        A finished run (``edgeloop demo --out DIR``).
    out
        The HTML file (default ``run_dir/report.html``).
    """
    run_dir = Path(run_dir)
    data = read_run(run_dir)
    pictures_dir = run_dir / PICTURES_DIR
    pictures_dir.mkdir(parents=True, exist_ok=True)
    drawn = [
        draw_reference(data, pictures_dir / "reference_clusters.png"),
        draw_edge_cases(data, pictures_dir / "edge_cases.png"),
        draw_ood_rate(data, pictures_dir / "ood_rate.png"),
        draw_accuracy(data, pictures_dir / "accuracy.png"),
    ]
    pictures = [p for p in drawn if p is not None]
    target = Path(out) if out is not None else run_dir / REPORT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(_html(data, pictures), encoding="utf-8")
    log.info("report: %s (%d pictures in %s)", target, len(pictures), pictures_dir)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edgeloop report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, default=Path("edgeloop-run"), help="run directory (default ./edgeloop-run)")
    parser.add_argument("--out", type=Path, default=None, help="HTML file (default RUN/report.html)")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        path = write_report(args.run, args.out)
    except EdgeloopError as exc:
        print(f"edgeloop report: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
