"""The paper's preprocessing, and its inverse for inference.

Per volume: in-plane resampling to `target_mm` (config.data.target_spacing_mm,
1.4 mm in the paper; anti-aliased when shrinking) and intensity rescaling of
the 1st..99th percentile to [0, 1], clamped. The returned `Preprocessing`
keeps what is needed to map model outputs back to the source's in-plane grid
and intensity scale.

`target_mm=None` ("native", jaxsr.config.target_spacing) keeps each volume's
own in-plane grid: no resampling at all, so anisotropic in-plane voxels stay
as they are and the grid, affine and restored intensities are the source's
exactly (a cubic resampling s -> s would not be the identity).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from jaxsr.errors import VolumeError
from jaxsr.io.nifti import Volume

@dataclasses.dataclass(frozen=True)
class IntensityScale:
    """Maps raw intensities to [0, 1]: lo_value -> 0, hi_value -> 1."""

    lo_value: float
    hi_value: float

    def apply(self, x: np.ndarray) -> np.ndarray:
        y = (np.asarray(x, np.float32) - self.lo_value) / (self.hi_value - self.lo_value)
        return np.clip(y, 0.0, 1.0).astype(np.float32)

    def restore(self, y: np.ndarray) -> np.ndarray:
        """Inverse of `apply` for values that were not clamped."""
        return (np.asarray(y, np.float32) * (self.hi_value - self.lo_value) + self.lo_value).astype(np.float32)


PERCENTILES = (1.0, 99.0)  # the intensities mapped to 0 and 1
# Percentiles closer than this (relative) are a constant image: float32 rounding
# of the device path's resampling alone moves a constant by up to ~1e-5 of it.
MIN_RELATIVE_RANGE = 1e-3


def intensity_scale(lo_value: float, hi_value: float, lo: float = PERCENTILES[0], hi: float = PERCENTILES[1]) -> IntensityScale:
    """The scale for these percentile values; ValueError when they (nearly) coincide, a constant image."""
    if not hi_value - lo_value > MIN_RELATIVE_RANGE * max(abs(lo_value), abs(hi_value)):
        values = f"both {lo_value:g}" if hi_value == lo_value else f"{lo_value:g} and {hi_value:g}, less than 0.1% apart"
        raise ValueError(f"constant intensity: the {lo}th and {hi}th percentiles are {values}")
    return IntensityScale(float(lo_value), float(hi_value))


def percentile_normalise(x: np.ndarray, lo: float = PERCENTILES[0], hi: float = PERCENTILES[1]) -> tuple[np.ndarray, IntensityScale]:
    """Rescales the lo..hi percentile range of `x` to [0, 1] and clamps."""
    lo_value, hi_value = np.percentile(np.asarray(x, np.float64), [lo, hi])
    scale = intensity_scale(lo_value, hi_value, lo, hi)
    return scale.apply(x), scale


def inplane_shape(shape_xy: tuple[int, int], spacing_xy: tuple[float, float], target_mm: float | None) -> tuple[int, int]:
    """Matrix size covering the same field of view at `target_mm` voxels; the source's own when None (native)."""
    if target_mm is None:
        return tuple(int(n) for n in shape_xy)
    return tuple(max(1, int(round(n * s / target_mm))) for n, s in zip(shape_xy, spacing_xy))


def resample_inplane(data: np.ndarray, out_shape_xy: tuple[int, int], *, order: int = 3) -> np.ndarray:
    """Resamples axes 0 and 1 of `data` to `out_shape_xy`, keeping the field of view.

    Voxel edges stay aligned (scipy's grid_mode), i.e. output voxel i covers
    the same physical extent as in the input: centre (i + 0.5)·(n/m) - 0.5 in
    input voxels. When shrinking, a Gaussian with sigma = (1/zoom - 1)/2
    (skimage's anti-aliasing rule) is applied first so fine structure does not
    alias. Each 2D slice is resampled on its own; slices and frames never mix.
    """
    data = np.asarray(data, np.float32)
    in_xy = data.shape[:2]
    zoom = tuple(m / n for m, n in zip(out_shape_xy, in_xy))
    if tuple(out_shape_xy) == tuple(in_xy):
        return data.copy()
    sigma = tuple(max(0.0, (1.0 / z - 1.0) / 2.0) for z in zoom)
    flat = data.reshape(in_xy + (-1,))
    out = np.empty(tuple(out_shape_xy) + (flat.shape[-1],), np.float32)
    for i in range(flat.shape[-1]):
        image = flat[..., i]
        if any(s > 0 for s in sigma):
            image = ndimage.gaussian_filter(image, sigma, mode="nearest")
        out[..., i] = ndimage.zoom(image, zoom, order=order, mode="grid-mirror", grid_mode=True)
    return out.reshape(tuple(out_shape_xy) + data.shape[2:])


def inplane_affine(affine: np.ndarray, in_xy: tuple[int, int], out_xy: tuple[int, int]) -> np.ndarray:
    """Affine of the in-plane resampled grid (same field of view, see resample_inplane)."""
    scale = np.array([n / m for n, m in zip(in_xy, out_xy)])
    voxel_map = np.eye(4)
    voxel_map[0, 0], voxel_map[1, 1] = scale
    voxel_map[:2, 3] = 0.5 * scale - 0.5
    return np.asarray(affine, np.float64) @ voxel_map


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What preprocess_volume did, so that it can be undone."""

    source_shape_xy: tuple[int, int]
    shape_xy: tuple[int, int]
    intensity: IntensityScale
    affine: np.ndarray  # of the preprocessed grid

    def restore(self, array: np.ndarray) -> np.ndarray:
        """Maps an array on the preprocessed grid back to the source grid and intensities.

        Works for any number of slices or frames (axes 2 and 3 are untouched).
        """
        back = resample_inplane(array, self.source_shape_xy)
        return self.intensity.restore(back)


def inplane_label(target_mm: float | None, spacing_xy: tuple[float, float] | None = None) -> str:
    """How a report names the in-plane spacing: '1.4 mm', 'native (1 x 1 mm)', or 'native' without a volume."""
    if target_mm is not None:
        return f"{target_mm:g} mm"
    if spacing_xy is None:
        return "native (each volume's own)"
    return f"native ({spacing_xy[0]:.4g} x {spacing_xy[1]:.4g} mm)"


def preprocess_volume(volume: Volume, target_mm: float | None) -> tuple[np.ndarray, Preprocessing]:
    """(X', Y', Z, T) float32 in [0, 1] at `target_mm` in-plane (None: the source's grid), and how to undo it.

    A 3D volume gets a trailing frame axis of length 1.
    """
    data = volume.data if volume.is_4d else volume.data[..., None]
    try:
        shape_xy = inplane_shape(data.shape[:2], volume.spacing[:2], target_mm)
        resampled = resample_inplane(data, shape_xy)
        normalised, scale = percentile_normalise(resampled)
    except ValueError as e:
        raise VolumeError(volume.path or "<memory>", str(e)) from None
    affine = inplane_affine(volume.affine, data.shape[:2], shape_xy)
    return normalised, Preprocessing(tuple(data.shape[:2]), shape_xy, scale, affine)
