"""tf.data input pipeline: preprocessed stacks -> augmented, host-sharded batches.

Elements are single slices or, in triplet mode, slices (n, n+1, n+2) of one
stack and frame (the interpolation loss's supervision). Every random choice is
a pure function of (seed, position in the epoch), so:
- the same seed gives the same batches, however many parallel map calls run;
- `start_step` resumes exactly where batch `start_step` would have come;
- hosts agree on one shuffled order per epoch and each takes every
  process_count-th element of it: shards are disjoint, cover the epoch (up to
  process_count - 1 elements dropped so every host yields the same number of
  batches, which a synchronous step needs), and need no communication.

The index walk and the epoch shuffle are numpy (cheap, exact); cropping,
rot90 and the intensity change run in tf.data's parallel map. TensorFlow is
kept off the GPUs: JAX owns the accelerator memory.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

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


def host_order(n: int, *, seed: int, epoch: int, process_index: int, process_count: int, shuffle: bool = True) -> np.ndarray:
    """This host's element positions for one epoch (positions into `element_index`)."""
    order = np.random.default_rng([seed, epoch]).permutation(n) if shuffle else np.arange(n)
    per_host = n // process_count
    return order[process_index : per_host * process_count : process_count]


def _augment(block: tf.Tensor, key: tf.Tensor, *, size: int, rot90: bool, gamma_range) -> tf.Tensor:
    """Pad to at least size x size (zeros are background), random crop, rot90, gamma."""
    h, w = tf.shape(block)[0], tf.shape(block)[1]
    ph, pw = tf.maximum(size - h, 0), tf.maximum(size - w, 0)
    block = tf.pad(block, [[ph // 2, ph - ph // 2], [pw // 2, pw - pw // 2], [0, 0]])
    channels = block.shape[-1]
    patch = tf.image.stateless_random_crop(block, [size, size, channels], seed=key)
    if rot90:
        k = tf.random.stateless_uniform([], seed=key + 1, minval=0, maxval=4, dtype=tf.int32)
        patch = tf.image.rot90(patch, k)
    if gamma_range:
        lo, hi = np.log(gamma_range[0]), np.log(gamma_range[1])
        gamma = tf.exp(tf.random.stateless_uniform([], seed=key + 2, minval=lo, maxval=hi))
        patch = tf.clip_by_value(patch, 0.0, 1.0) ** gamma
    return tf.ensure_shape(patch, [size, size, channels])


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
    per_epoch = len(index) // process_count
    if per_epoch < batch_size:
        raise ValueError(f"{len(index)} elements make {per_epoch} per host, fewer than one batch of {batch_size}")
    batches_per_epoch = per_epoch // batch_size
    depth = 3 if triplets else 1
    size = int(data_cfg.crop_size)
    rot90 = augment and bool(data_cfg.rot90)
    gamma_range = tuple(data_cfg.gamma_range) if augment and data_cfg.intensity_aug else None

    # Frame-major copies (the dataset's memory once more): one element is then a
    # contiguous (depth, X, Y) block, a memcpy instead of a strided gather
    # across the (X, Y, Z, T) layout. The generator is the serial part; this
    # made the pipeline 1.6x faster on 2 cores.
    frames = [np.ascontiguousarray(np.transpose(stack, (3, 2, 0, 1)), np.float32) for stack in stacks]

    def generate():
        # Resume: skip whole epochs arithmetically, then the batches already used.
        epoch, skip = divmod(start_step, batches_per_epoch)
        while True:
            order = host_order(len(index), seed=seed, epoch=epoch, process_index=process_index,
                               process_count=process_count, shuffle=shuffle)
            order = order[: batches_per_epoch * batch_size]
            for i in range(skip * batch_size, order.size):
                s, f, n = index[order[i]]
                # One key per (epoch, global position): same augmentation on any host layout.
                yield frames[s][f, n : n + depth], np.array([seed, epoch * len(index) + order[i]], np.int64)
            skip = 0
            epoch += 1
            if not repeat:
                return

    ds = tf.data.Dataset.from_generator(
        generate,
        output_signature=(tf.TensorSpec((depth, None, None), tf.float32), tf.TensorSpec((2,), tf.int64)),
    )

    def to_example(block, key):
        block = tf.transpose(block, [1, 2, 0])
        patch = _augment(block, key, size=size, rot90=rot90, gamma_range=gamma_range) if augment else _centre(block, size)
        out = {"image": patch[..., depth // 2 : depth // 2 + 1]}
        if triplets:
            out["triplet"] = patch
        return out

    options = tf.data.Options()
    options.deterministic = True
    ds = ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE).with_options(options)
    return ds.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def _centre(block: tf.Tensor, size: int) -> tf.Tensor:
    channels = block.shape[-1]
    return tf.ensure_shape(tf.image.resize_with_crop_or_pad(block, size, size), [size, size, channels])


def numpy_batches(ds: tf.data.Dataset):
    """Iterator of dicts of numpy arrays (what jax.make_array_from_process_local_data takes)."""
    return ds.as_numpy_iterator()
