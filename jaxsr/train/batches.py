"""Training batches from preprocessed stacks, a pure function of (seed, step).

Batch s is drawn with numpy's Generator seeded by (seed, s, process_index), so
a resumed run continues exactly the same data order and each host draws its
own share without coordination.
"""

from __future__ import annotations

import numpy as np


def _crop_pad(image: np.ndarray, size: int, rng: np.random.Generator | None) -> np.ndarray:
    """Random (rng) or centre (None) crop of the last-but-one two axes; zero-pads small images."""
    h, w = image.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        image = np.pad(image, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)) + ((0, 0),) * (image.ndim - 2))
        h, w = image.shape[:2]
    if rng is None:
        y, x = (h - size) // 2, (w - size) // 2
    else:
        y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    return image[y : y + size, x : x + size]


def _augment(patch: np.ndarray, rng: np.random.Generator, data_cfg) -> np.ndarray:
    if data_cfg.rot90:
        patch = np.rot90(patch, k=int(rng.integers(4)), axes=(0, 1))
    if data_cfg.intensity_aug:
        lo, hi = data_cfg.gamma_range
        gamma = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        patch = np.clip(patch, 0.0, 1.0) ** gamma
    return np.ascontiguousarray(patch, np.float32)


def sample_batch(stacks: list[np.ndarray], data_cfg, *, batch_size: int, seed: int, step: int, process_index: int = 0, triplets: bool = False) -> dict:
    """One batch: {'image': (B, S, S, 1)} and, with triplets, {'triplet': (B, S, S, 3)}."""
    rng = np.random.default_rng([seed, step, process_index])
    size = int(data_cfg.crop_size)
    images, trips = [], []
    for _ in range(batch_size):
        stack = stacks[rng.integers(len(stacks))]
        z, t = stack.shape[2], stack.shape[3]
        frame = int(rng.integers(t))
        if triplets:
            n = int(rng.integers(z - 2))
            block = stack[:, :, n : n + 3, frame]
        else:
            n = int(rng.integers(z))
            block = stack[:, :, n : n + 1, frame]
        patch = _augment(_crop_pad(block, size, rng), rng, data_cfg)
        if triplets:
            trips.append(patch)
            images.append(patch[..., 1:2])
        else:
            images.append(patch)
    out = {"image": np.stack(images)}
    if triplets:
        out["triplet"] = np.stack(trips)
    return out


def eval_batches(stacks: list[np.ndarray], data_cfg, *, batch_size: int, max_batches: int) -> list[dict]:
    """Deterministic centre crops of validation triplets (every slice n with n + 2 < Z)."""
    size = int(data_cfg.crop_size)
    trips = []
    for stack in stacks:
        for frame in range(0, stack.shape[3], max(1, stack.shape[3] // 4)):
            for n in range(stack.shape[2] - 2):
                trips.append(_crop_pad(stack[:, :, n : n + 3, frame], size, None))
    trips = trips[: batch_size * max_batches]
    batches = []
    for i in range(0, len(trips) - batch_size + 1, batch_size):
        t = np.stack(trips[i : i + batch_size]).astype(np.float32)
        batches.append({"image": t[..., 1:2], "triplet": t})
    return batches
