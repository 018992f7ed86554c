"""Per-slice scores: what is scored (methods, metrics, variants), how images are scored, the table.

Every row of a `ScoreTable` is one slice of one frame of one volume, scored
for one method in one variant of the protocol (jaxsr.evaluate):
- 'dropped' (primary, the verdict): the reconstructed slices against the
  dropped originals.
- 'all' (paper-compatible, an appendix): every slice from the first to the
  last kept one. At a kept slice a method is scored on what it returns there:
  the baselines and the residual mix return the acquired slice itself, which
  scores perfectly by construction (PSNR +inf), the autoencoder its own
  encode-decode reconstruction. So this variant does not compare interpolation.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Any, Callable, Iterable, Mapping

import numpy as np

MetricFn = Callable[[np.ndarray, np.ndarray], Any]

AE = "ae"
AE_RESIDUAL = "ae_residual"  # the detail-preserving mix (jaxsr.residual_mix), beyond the paper
BASELINES = ("linear", "bspline", "lanczos")
METHODS = (AE, AE_RESIDUAL) + BASELINES
METRICS = ("ssim", "psnr", "vif")
PRIMARY = "dropped"
VARIANTS = {
    "dropped": "every other slice dropped, reconstructed from its two kept neighbours and scored against the original",
    "all": "every slice up to the last kept one is scored, the kept slices too; there the baselines and the "
    "residual mix return the acquired slice itself (a perfect score by construction) and the autoencoder its own "
    "encode-decode reconstruction, so this variant does not compare interpolation",
}
COLUMNS = ("volume", "frame", "slice", "method", "variant") + METRICS
METRIC_CHUNK = 256


# ----------------------------------------------------------------------------
# The table


@dataclasses.dataclass
class ScoreTable:
    """Column-wise per-slice scores: one row per (volume, frame, slice, method, variant)."""

    columns: dict[str, np.ndarray]

    @classmethod
    def empty(cls) -> "ScoreTable":
        return cls({c: np.zeros(0, _dtype(c)) for c in COLUMNS})

    @classmethod
    def concat(cls, tables: Iterable["ScoreTable"]) -> "ScoreTable":
        tables = list(tables)
        if not tables:
            return cls.empty()
        return cls({c: np.concatenate([t.columns[c] for t in tables]) for c in COLUMNS})

    def __len__(self) -> int:
        return int(self.columns["slice"].size)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def select(self, *, method: str | None = None, variant: str | None = None) -> "ScoreTable":
        mask = np.ones(len(self), bool)
        if method is not None:
            mask &= self.columns["method"] == method
        if variant is not None:
            mask &= self.columns["variant"] == variant
        return ScoreTable({c: v[mask] for c, v in self.columns.items()})

    def keys(self) -> list[tuple]:
        """(volume, frame, slice) per row: what pairs two methods' scores."""
        return list(zip(self.columns["volume"].tolist(), self.columns["frame"].tolist(), self.columns["slice"].tolist()))

    def methods(self) -> list[str]:
        present = set(self.columns["method"].tolist())
        return [m for m in METHODS if m in present] + sorted(present - set(METHODS))

    def write_csv(self, path: str | os.PathLike) -> None:
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(COLUMNS)
            for row in zip(*(self.columns[c].tolist() for c in COLUMNS)):
                writer.writerow([repr(v) if isinstance(v, float) else v for v in row])

    @classmethod
    def read_csv(cls, path: str | os.PathLike) -> "ScoreTable":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return cls({c: np.array([r[c] for r in rows], _dtype(c)) for c in COLUMNS})


def _dtype(column: str):
    if column in ("frame", "slice"):
        return np.int64
    if column in METRICS:
        return np.float64
    return object


# ----------------------------------------------------------------------------
# Scoring images


def _bucket(m: int) -> int:
    """8, 16, 32, then multiples of 32: few compiled shapes, under 32 wasted images."""
    return max(8, 1 << (m - 1).bit_length()) if m <= 32 else -(-m // 32) * 32


def score_images(reference: np.ndarray, test: np.ndarray, metrics: Mapping[str, MetricFn], *, chunk: int = METRIC_CHUNK) -> dict[str, np.ndarray]:
    """Per-image scores of `test` against `reference`, both (N, H, W, 1).

    Each metric is called as fn(reference, test), the jaxsr.metrics order
    (VIF is not symmetric). A short chunk is padded to a bucket size (see
    `_bucket`) by repeating its first image (zeros would make VIF 0/0), so
    jitted metrics compile a few shapes; padded rows are discarded.
    """
    n = reference.shape[0]
    out = {name: np.empty(n, np.float64) for name in metrics}
    for start in range(0, n, chunk):
        a, b = reference[start : start + chunk], test[start : start + chunk]
        m = a.shape[0]
        size = _bucket(m)
        if size > m:
            a = np.concatenate([a, np.repeat(a[:1], size - m, axis=0)])
            b = np.concatenate([b, np.repeat(b[:1], size - m, axis=0)])
        for name, fn in metrics.items():
            out[name][start : start + m] = np.asarray(fn(a, b), np.float64).reshape(-1)[:m]
    return out


def score_methods(truth: np.ndarray, preds: list[np.ndarray], metrics: Mapping[str, MetricFn]) -> dict[str, np.ndarray]:
    """Scores of each method's images (stacked method-major) against `truth`.

    A slice that a method returns bit for bit equal to the original (every
    baseline at a kept slice) is scored once as original vs original and the
    result reused: the metric of the same inputs is the same number, and this
    saves over a third of the work of the paper-compatible variant.
    """
    n = truth.shape[0]
    pred = np.concatenate(preds)
    same = np.all(pred.reshape(pred.shape[0], -1) == np.tile(truth.reshape(n, -1), (len(preds), 1)), axis=1)
    differ = np.nonzero(~same)[0]
    identical = np.unique(np.nonzero(same)[0] % n)
    reference = np.concatenate([truth[differ % n], truth[identical]])
    test = np.concatenate([pred[differ], truth[identical]])
    scored = score_images(reference, test, metrics) if reference.shape[0] else {m: np.zeros(0) for m in metrics}
    out = {}
    for name, values in scored.items():
        full = np.empty(pred.shape[0], np.float64)
        full[differ] = values[: differ.size]
        lookup = np.empty(n, np.float64)
        lookup[identical] = values[differ.size :]
        same_rows = np.nonzero(same)[0]
        full[same_rows] = lookup[same_rows % n]
        out[name] = full
    return out
