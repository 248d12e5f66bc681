"""Serving a published model without torch: the MLP's forward pass in numpy.

The consumer only predicts, and importing torch costs about 500 MiB of resident memory (134 MiB for
the whole service without it, measured here). The registry therefore stores each version's weights a
second time as a numpy ``.npz`` (with its own sha256), and the consumer serves it with
:class:`ServingModel`, which computes exactly what ``OrientationModel.predict_proba`` computes:
``sigmoid(W2 · relu(W1 · x + b1) + b2)`` on the same input features (dropout is off at inference).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgeloop.errors import EdgeloopError
from edgeloop.features import FEATURE_MODES, FeatureMode, normalise_pose

# The parameter names of OrientationMLP (and of UpTrain's BinaryClassification).
WEIGHT_NAMES = ("layer_1.weight", "layer_1.bias", "layer_out.weight", "layer_out.bias")


class ServingError(EdgeloopError):
    """Weights that cannot be served (missing arrays, wrong shapes, unknown feature mode)."""


def network_input(kps: np.ndarray, mode: FeatureMode, pose: np.ndarray | None = None) -> np.ndarray:
    """The network's input for ``(n, 34)`` keypoints: float32 ``(n, 34)`` without NaN.

    ``"raw"``: the pixels, NaN (missing) as 0 like the pose estimators' ``(0, 0)``. ``"pose"``:
    :func:`~edgeloop.features.normalise_pose` with missing keypoints at the origin (the mid-hip);
    ``pose`` is that array when the caller has it already.
    """
    if mode == "raw":
        out = np.nan_to_num(np.asarray(kps, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    elif mode == "pose":
        features = normalise_pose(kps) if pose is None else pose
        out = np.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)
    else:
        raise ServingError(f"unknown feature mode {mode!r}; use one of {FEATURE_MODES}")
    return out


def weights_to_npz(weights: Mapping[str, np.ndarray]) -> bytes:
    """The ``.npz`` bytes of a state dict's arrays (no pickle inside)."""
    buffer = io.BytesIO()
    arrays: dict[str, Any] = {name: np.asarray(weights[name], dtype=np.float32) for name in WEIGHT_NAMES}
    np.savez(buffer, **arrays)
    return buffer.getvalue()


class ServingModel:
    """A published version's network, evaluated with numpy."""

    def __init__(self, weights: Mapping[str, np.ndarray], features: FeatureMode) -> None:
        missing = [n for n in WEIGHT_NAMES if n not in weights]
        if missing:
            raise ServingError(f"the weights lack {missing}")
        w1, b1 = np.asarray(weights["layer_1.weight"]), np.asarray(weights["layer_1.bias"])
        w2, b2 = np.asarray(weights["layer_out.weight"]), np.asarray(weights["layer_out.bias"])
        if w1.ndim != 2 or w1.shape[1] != 34 or b1.shape != (w1.shape[0],) or w2.shape != (1, w1.shape[0]):
            raise ServingError(f"unexpected weight shapes {w1.shape}, {b1.shape}, {w2.shape}, {b2.shape}")
        if features not in FEATURE_MODES:
            raise ServingError(f"unknown feature mode {features!r}; use one of {FEATURE_MODES}")
        self.features: FeatureMode = features
        self._w1t = np.ascontiguousarray(w1.T, dtype=np.float32)
        self._b1 = b1.astype(np.float32)
        self._w2 = w2.reshape(-1).astype(np.float32)
        self._b2 = float(b2.reshape(-1)[0])

    @classmethod
    def from_npz(cls, data: bytes, features: FeatureMode) -> ServingModel:
        """Weights from ``.npz`` bytes; pickled objects are refused."""
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as archive:
                return cls({name: archive[name] for name in archive.files}, features)
        except (ValueError, OSError, KeyError) as exc:
            raise ServingError(f"the weights file cannot be read: {exc}") from None

    def logits(self, kps: np.ndarray, *, pose: np.ndarray | None = None) -> np.ndarray:
        hidden = network_input(kps, self.features, pose) @ self._w1t
        hidden += self._b1
        np.maximum(hidden, 0.0, out=hidden)
        return (hidden @ self._w2 + self._b2).astype(np.float64)

    def predict_proba(self, kps: np.ndarray, *, pose: np.ndarray | None = None) -> np.ndarray:
        """Probability of "horizontal body" (gt 1) per frame, float64 ``(n,)``.

        ``pose``: :func:`~edgeloop.features.normalise_pose` of ``kps``, when the caller has it.
        """
        return 1.0 / (1.0 + np.exp(-self.logits(kps, pose=pose)))

    def predict(self, kps: np.ndarray) -> np.ndarray:
        return (self.predict_proba(kps) > 0.5).astype(np.int64)
