"""tf.data input pipeline: preprocessed stacks -> augmented, host-sharded batches.

Elements are single slices or, in triplet mode, slices (n, n+1, n+2) of one
stack and frame (the interpolation loss's supervision). The whole pipeline is
TensorFlow ops, run by tf.data's own threads: no Python generator holds the
GIL while JAX dispatches steps.

- A counter (Dataset.range) numbers this host's elements across epochs.
- Counter -> (epoch, position in the epoch's global order) -> element, by
  tf.random.experimental.index_shuffle, a stateless permutation seeded by
  (seed, epoch) that maps any position without building the order. Host p
  takes positions p, p + P, p + 2P, ...: shards are disjoint, cover the epoch
  (up to P - 1 elements dropped so every host yields the same number of
  batches, which a synchronous step needs), and need no communication.
- Element -> pixels: rows of a jaxsr.data.slice_table held in a tf.Variable
  (a constant would be copied into the graph, which TensorFlow caps at 2 GB).
- Crop, rot90 and gamma are stateless random ops keyed by (seed, epoch,
  element), in a parallel, deterministic map; then batch and prefetch.

So the same seed gives the same batches however many map calls run, and
`start_step` resumes exactly: it only moves the counter's start. TensorFlow is
kept off the GPUs: JAX owns the accelerator memory.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from jaxsr.data import slice_table

tf.config.set_visible_devices([], "GPU")


def element_index(stacks: list[np.ndarray], triplets: bool) -> np.ndarray:
    """(N, 3) int rows (stack, frame, first slice): every slice, or every triplet start."""
    rows = []
    for s, stack in enumerate(stacks):
        if stack.ndim != 4:
            raise ValueError(f"stack {s}: expected (X, Y, Z, T), got shape {stack.shape}")
        z, t = stack.shape[2], stack.shape[3]
        starts = np.arange(z - 2 if triplets else z)
        if starts.size == 0:
            continue
        f, n = np.meshgrid(np.arange(t), starts, indexing="ij")
        rows.append(np.stack([np.full(f.size, s), f.ravel(), n.ravel()], axis=1))
    if not rows:
        raise ValueError("no elements: every stack is too thin" + (" for triplets (needs 3 slices)" if triplets else ""))
    return np.concatenate(rows).astype(np.int64)


def _epoch_element(position, *, seed: int, epoch, n: int, shuffle: bool):
    """The element at `position` of epoch `epoch`'s order of the n elements (TF ops; position scalar or vector)."""
    if not shuffle:
        return position
    key = tf.stack([tf.constant(seed, tf.int64), tf.cast(epoch, tf.int64)])
    return tf.random.experimental.index_shuffle(position, key, tf.constant(n - 1, tf.int64))


def host_order(n: int, *, seed: int, epoch: int, process_index: int, process_count: int, shuffle: bool = True) -> np.ndarray:
    """This host's elements of one epoch, in order (what make_dataset walks, evaluated eagerly)."""
    positions = process_index + process_count * np.arange(n // process_count, dtype=np.int64)
    return np.asarray(_epoch_element(tf.constant(positions), seed=seed, epoch=epoch, n=n, shuffle=shuffle))


def _augment(block: tf.Tensor, key: tf.Tensor, height, width, *, size: int, rot90: bool, gamma_range) -> tf.Tensor:
    """Random crop of a (depth, H, W) block's top-left (height, width) region, rot90, gamma -> (size, size, depth)."""
    fold = tf.random.experimental.stateless_fold_in
    y = tf.random.stateless_uniform([], fold(key, 0), minval=0, maxval=height - size + 1, dtype=tf.int32)
    x = tf.random.stateless_uniform([], fold(key, 1), minval=0, maxval=width - size + 1, dtype=tf.int32)
    patch = tf.transpose(block[:, y : y + size, x : x + size], [1, 2, 0])
    if rot90:
        patch = tf.image.rot90(patch, tf.random.stateless_uniform([], fold(key, 2), minval=0, maxval=4, dtype=tf.int32))
    if gamma_range:
        lo, hi = np.log(gamma_range[0]), np.log(gamma_range[1])
        gamma = tf.exp(tf.random.stateless_uniform([], fold(key, 3), minval=lo, maxval=hi))
        patch = tf.clip_by_value(patch, 0.0, 1.0) ** gamma
    return patch


def _centre(block: tf.Tensor, height, width, *, size: int) -> tf.Tensor:
    """The centre crop (the numpy sampler's validation crop) of the (height, width) region."""
    y, x = (height - size) // 2, (width - size) // 2
    return tf.transpose(block[:, y : y + size, x : x + size], [1, 2, 0])


def make_dataset(
    stacks: list[np.ndarray],
    data_cfg,
    *,
    batch_size: int,
    seed: int,
    triplets: bool = False,
    process_index: int = 0,
    process_count: int = 1,
    start_step: int = 0,
    shuffle: bool = True,
    augment: bool = True,
    repeat: bool = True,
) -> tf.data.Dataset:
    """Batches {'image': (B, S, S, 1)} (+ {'triplet': (B, S, S, 3)}) of float32 in [0, 1].

    `batch_size` is this host's share of the global batch. Without `repeat`
    one epoch is yielded (the last partial batch dropped).
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    index = element_index(stacks, triplets)
    n = len(index)
    per_host = n // process_count
    if per_host < batch_size:
        raise ValueError(f"{n} elements make {per_host} per host, fewer than one batch of {batch_size}")
    per_epoch = per_host // batch_size * batch_size  # this host's elements used per epoch
    depth = 3 if triplets else 1
    size = int(data_cfg.crop_size)
    rot90 = augment and bool(data_cfg.rot90)
    gamma_range = tuple(data_cfg.gamma_range) if augment and data_cfg.intensity_aug else None

    table = slice_table.build(stacks, size)
    s = index[:, 0]
    first_rows = tf.constant(table.first_row[s] + index[:, 1] * table.slices[s] + index[:, 2], tf.int64)
    heights, widths = tf.constant(table.height[s]), tf.constant(table.width[s])
    pixels = tf.Variable(table.pixels, trainable=False)
    del table

    def example(count):
        epoch, i = count // per_epoch, count % per_epoch
        element = _epoch_element(process_index + i * process_count, seed=seed, epoch=epoch, n=n, shuffle=shuffle)
        block = tf.gather(pixels, first_rows[element] + tf.range(depth, dtype=tf.int64))
        h, w = heights[element], widths[element]
        if augment:
            # One key per (epoch, element): the same augmentation on any host layout.
            key = tf.stack([tf.constant(seed, tf.int64), epoch * n + element])
            patch = _augment(block, key, h, w, size=size, rot90=rot90, gamma_range=gamma_range)
        else:
            patch = _centre(block, h, w, size=size)
        patch = tf.ensure_shape(patch, [size, size, depth])
        out = {"image": patch[..., depth // 2 : depth // 2 + 1]}
        if triplets:
            out["triplet"] = patch
        return out

    ds = tf.data.Dataset.range(start_step * batch_size, tf.int64.max if repeat else per_epoch)
    ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def numpy_batches(ds: tf.data.Dataset):
    """Iterator of dicts of numpy arrays (what jax.make_array_from_process_local_data takes)."""
    return ds.as_numpy_iterator()
