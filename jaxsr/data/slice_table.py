"""Every training slice in one padded array, for samplers that index it without Python.

The tf.data pipeline and the on-device sampler (jaxsr.train.device_data) draw
crops from this table with a traced index: stack s, frame t, slice z is row
`first_row[s] + t * slices[s] + z`, so the triplet (z, z+1, z+2) is three
consecutive rows. Each stack's slices are first zero-padded, centred, to at
least crop x crop (what the numpy sampler does before cropping, zeros being
background) and then placed at the top-left of a common (H, W) frame. A
uniform crop start in [0, height[s] - crop] x [0, width[s] - crop] then gives
the numpy sampler's random crop, or its centred zero-pad when a slice is
smaller than the crop, and never reads the filler of another stack's shape.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class SliceTable:
    pixels: np.ndarray  # (rows, H, W) float32, zero beyond each stack's (height, width)
    first_row: np.ndarray  # (stacks,) int32: row of stack s, frame 0, slice 0
    slices: np.ndarray  # (stacks,) int32: Z of each stack
    frames: np.ndarray  # (stacks,) int32: T of each stack
    height: np.ndarray  # (stacks,) int32: rows of the padded slice, >= crop
    width: np.ndarray  # (stacks,) int32: columns of the padded slice, >= crop

    def arrays(self) -> dict[str, np.ndarray]:
        return dataclasses.asdict(self)


def as_4d(stack: np.ndarray) -> np.ndarray:
    """(X, Y, Z) volumes are one frame of (X, Y, Z, T)."""
    if stack.ndim == 3:
        return stack[..., None]
    if stack.ndim != 4:
        raise ValueError(f"expected an (X, Y, Z) or (X, Y, Z, T) stack, got shape {stack.shape}")
    return stack


def table_bytes(stacks: list[np.ndarray], crop_size: int) -> int:
    """The size of `build(stacks, crop_size).pixels`, without building it."""
    shapes = [as_4d(s).shape for s in stacks]
    h = max(max(x, crop_size) for x, _, _, _ in shapes)
    w = max(max(y, crop_size) for _, y, _, _ in shapes)
    rows = sum(z * t for _, _, z, t in shapes)
    return rows * h * w * np.dtype(np.float32).itemsize


def build(stacks: list[np.ndarray], crop_size: int) -> SliceTable:
    stacks = [as_4d(s) for s in stacks]
    if not stacks:
        raise ValueError("no stacks")
    height = np.array([max(s.shape[0], crop_size) for s in stacks], np.int32)
    width = np.array([max(s.shape[1], crop_size) for s in stacks], np.int32)
    slices = np.array([s.shape[2] for s in stacks], np.int32)
    frames = np.array([s.shape[3] for s in stacks], np.int32)
    counts = slices * frames
    first_row = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    pixels = np.zeros((int(counts.sum()), int(height.max()), int(width.max())), np.float32)
    for s, stack in enumerate(stacks):
        x, y = stack.shape[:2]
        py, px = (height[s] - x) // 2, (width[s] - y) // 2  # numpy sampler: ph // 2 before, the rest after
        rows = np.transpose(stack, (3, 2, 0, 1)).reshape(-1, x, y)  # (T * Z, X, Y), frame-major
        pixels[first_row[s] : first_row[s] + counts[s], py : py + x, px : px + y] = rows
    return SliceTable(pixels, first_row, slices, frames, height, width)
