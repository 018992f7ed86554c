"""The training set on the device: each batch is drawn inside the jitted step.

The slices live on the device as a jaxsr.data.slice_table, replicated on
every device of every host (each host loads all training volumes anyway).
Batch `step` is a pure function of (seed, step): example i draws, from
fold_in(key, step) split B ways, a stack, a frame, a slice (or triplet
start), a crop, a rot90 k and a gamma, with the distributions of the numpy
sampler (jaxsr.train.batches): stack, then frame, then slice uniformly; a
uniform crop of the slice zero-padded, centred, to at least the crop; k in
0..3; gamma = exp(U(log lo, log hi)) on clip(x, 0, 1).

Nothing depends on the number of devices or hosts: the batch is laid out
over the mesh's 'data' axis, each device computes its own examples, and with
jax's partitionable threefry (the default) the random draws do not depend on
how they are sharded. A run resumed on another mesh draws the same batches.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsr.data import slice_table

# Keeps the data's random stream apart from nnx.Rngs(seed)'s, which also starts from key(seed).
DATA_STREAM = 0x64617461  # "data"


def put(stacks: list[np.ndarray], crop_size: int, mesh: jax.sharding.Mesh) -> dict[str, jax.Array]:
    """The slice table of `stacks`, replicated over `mesh`."""
    table = slice_table.build(stacks, crop_size)
    return jax.device_put(table.arrays(), NamedSharding(mesh, P()))


def _example(table: dict, key: jax.Array, *, size: int, depth: int, rot90: bool, log_gamma) -> jax.Array:
    k_stack, k_frame, k_slice, k_y, k_x, k_rot, k_gamma = jax.random.split(key, 7)
    s = jax.random.randint(k_stack, (), 0, table["slices"].shape[0])
    t = jax.random.randint(k_frame, (), 0, table["frames"][s])
    n = jax.random.randint(k_slice, (), 0, table["slices"][s] - (depth - 1))
    y = jax.random.randint(k_y, (), 0, table["height"][s] - size + 1)
    x = jax.random.randint(k_x, (), 0, table["width"][s] - size + 1)
    row = table["first_row"][s] + t * table["slices"][s] + n
    patch = jnp.moveaxis(lax.dynamic_slice(table["pixels"], (row, y, x), (depth, size, size)), 0, -1)
    if rot90:
        k = jax.random.randint(k_rot, (), 0, 4)
        patch = lax.switch(k, [functools.partial(jnp.rot90, k=i, axes=(0, 1)) for i in range(4)], patch)
    if log_gamma is not None:
        gamma = jnp.exp(jax.random.uniform(k_gamma, (), minval=log_gamma[0], maxval=log_gamma[1]))
        patch = jnp.clip(patch, 0.0, 1.0) ** gamma
    return patch


def sampler(data_cfg, *, batch_size: int, seed: int, triplets: bool, sharding: NamedSharding | None = None) -> Callable:
    """sample(table, step) -> {'image': (B, S, S, 1)} (+ {'triplet': (B, S, S, 3)}); traceable, for inside a jit.

    `sharding` (the batch's, P('data') over the mesh) lays the examples out
    so that each device draws and crops only its own.
    """
    depth = 3 if triplets else 1
    gamma = tuple(np.log(data_cfg.gamma_range)) if data_cfg.intensity_aug else None
    example = functools.partial(_example, size=int(data_cfg.crop_size), depth=depth, rot90=bool(data_cfg.rot90), log_gamma=gamma)
    constrain = (lambda x: x) if sharding is None else functools.partial(lax.with_sharding_constraint, shardings=sharding)

    def sample(table: dict, step) -> dict:
        key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed), DATA_STREAM), step)
        keys = constrain(jax.random.split(key, batch_size))
        patches = constrain(jax.vmap(example, in_axes=(None, 0))(table, keys))
        out = {"image": patches[..., depth // 2 : depth // 2 + 1]}
        if triplets:
            out["triplet"] = patches
        return out

    return sample
