"""Stacks whose every pixel is distinct, and the search that traces a patch back to its source crop and rotation.

Shared by the tf.data pipeline's tests and the on-device sampler's: both must
produce rotated crops of real slices.
"""

from __future__ import annotations

import ml_collections
import numpy as np

H, W, Z, T = 40, 36, 5, 3


def augment_config(**kw) -> ml_collections.ConfigDict:
    """The data config keys the samplers read: 24 x 24 crops, rot90 and gamma on."""
    return ml_collections.ConfigDict({"crop_size": 24, "rot90": True, "intensity_aug": True, "gamma_range": (0.8, 1.25), **kw})


def coded_stacks() -> list[np.ndarray]:
    """Two (H, W, Z, T) stacks; every pixel of every slice holds a distinct value in (0, 1)."""
    n = 2 * H * W * Z * T
    codes = (np.arange(n, dtype=np.float64) + 1) / (n + 1)
    a, b = codes[: n // 2].reshape(H, W, Z, T), codes[n // 2 :].reshape(H, W, Z, T)
    return [a.astype(np.float32), b.astype(np.float32)]


def locate(patch: np.ndarray, stacks) -> tuple[int, int, int, int, int, int]:
    """(stack, frame, slice, y, x, k) with np.rot90(stack[y:y+S, x:x+S, slice, frame], k) == patch."""
    for k in range(4):
        src = np.rot90(patch, -k)
        h, w = src.shape
        for i, stack in enumerate(stacks):
            for y, x, z, t in np.argwhere(stack == src[0, 0]):
                if np.array_equal(stack[y : y + h, x : x + w, z, t], src):
                    return i, t, z, y, x, k
    raise AssertionError("patch is no rotated crop of any slice")


def check_triplet(trip: np.ndarray, stacks) -> tuple[int, int, int, int, int, int]:
    """Traces a (S, S, 3) triplet patch; asserts its channels are slices z, z+1, z+2 of one frame, same crop and rotation."""
    i, t, z, y, x, k = locate(trip[..., 0], stacks)
    s = trip.shape[0]
    np.testing.assert_array_equal(trip, np.rot90(stacks[i][y : y + s, x : x + s, z : z + 3, t], k))
    return i, t, z, y, x, k


def assert_rotated_crops_everywhere(patches, stacks) -> list[tuple]:
    """Each patch (40 or more) is a rotated crop of a slice, every rotation occurs, and crops and sources vary."""
    assert len(patches) >= 40
    found = [locate(p, stacks) for p in patches]
    assert {f[5] for f in found} == {0, 1, 2, 3}  # every rotation occurs
    assert len({(f[3], f[4]) for f in found}) > 20  # crops move over the slice
    assert len({(f[0], f[1], f[2]) for f in found}) > 20  # and over slices, frames and stacks
    return found
