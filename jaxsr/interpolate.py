"""Latent interpolation of 3D and 4D volumes: the method of the paper at inference.

Every acquired slice of every frame is encoded exactly once (one batch over
slices x frames, sharded over a 1-D 'data' mesh of the local devices); each new
slice at fractional position p = n + a is decoded from (1 - a)·z(n) + a·z(n+1),
formed with `vmap` over the alphas and over the frames; decoding runs in
fixed-size batches so that a volume larger than device memory streams through.
With mix='residual' (jaxsr.mixes, jaxsr.residual_mix) each decoded batch also
gets the neighbours' residuals x - D(z) added on the device before it is
copied back; D(z) is one more decode of the latents of the acquired slices.

The model enters as an NNX module (eval mode) or any object with `encode` and
`decode` methods that are traceable JAX functions of NHWC arrays. An NNX module
is split once (`nnx.split`); the jitted functions are pure functions of
(graphdef, state, x) with the graphdef static, so compiled code is shared by
every volume whose padded in-plane size and batch size match. Batch sizes come
from a short ladder (device count x powers of two, capped at `batch_size`) and
in-plane sizes are padded to multiples of a bucket, so an archive of mixed
matrix sizes compiles a handful of programs, not one per file.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import os
from typing import Any, Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsr.io.nifti import Volume, output_positions, positions_step, resliced_affine
from jaxsr.mixes import DEFAULT_MIX, RESIDUAL, check_mix
from jaxsr import fallback as fallback_lib
from jaxsr.residual_mix import residual_mix_batch

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 64
DEFAULT_SIZE_BUCKET = 32
# Positions closer than this to an integer are acquired slices.
_INTEGER_TOL = 1e-6


# ----------------------------------------------------------------------------
# Slice positions -> (lower slice, alpha) pairs


@dataclasses.dataclass(frozen=True)
class SlicePlan:
    """How each output slice is made from the acquired ones.

    positions: (P,) fractional input-slice coordinates of the output slices.
    lower, alpha: (P,) the pair (lower, lower + 1) and the mixing weight, so
        that position = lower + alpha with alpha in [0, 1].
    acquired: (P,) index of the acquired slice at that position, -1 for new ones.
    """

    positions: np.ndarray
    lower: np.ndarray
    alpha: np.ndarray
    acquired: np.ndarray

    @property
    def new(self) -> np.ndarray:
        """Output indices of the slices that do not coincide with an acquired one."""
        return np.flatnonzero(self.acquired < 0)

    @property
    def kept(self) -> np.ndarray:
        """Output indices of the acquired slices."""
        return np.flatnonzero(self.acquired >= 0)


def plan_slices(positions: Sequence[float] | np.ndarray, n_slices: int) -> SlicePlan:
    """Splits fractional positions into slice pairs and alphas (no extrapolation)."""
    positions = np.asarray(positions, np.float64).reshape(-1)
    if n_slices < 2:
        raise ValueError(f"{n_slices} slice(s): interpolation needs at least 2")
    if positions.size == 0:
        raise ValueError("no output positions")
    if positions.min() < -_INTEGER_TOL or positions.max() > n_slices - 1 + _INTEGER_TOL:
        raise ValueError(
            f"positions must lie in [0, {n_slices - 1}] (no extrapolation), got "
            f"[{positions.min():g}, {positions.max():g}]"
        )
    positions = np.clip(positions, 0.0, n_slices - 1)
    rounded = np.rint(positions)
    is_acquired = np.abs(positions - rounded) <= _INTEGER_TOL
    # The last slice is reached from the pair (n-2, n-1) with alpha = 1.
    lower = np.minimum(np.floor(np.where(is_acquired, rounded, positions)), n_slices - 2).astype(np.int32)
    alpha = np.where(is_acquired, rounded - lower, positions - lower).astype(np.float32)
    acquired = np.where(is_acquired, rounded, -1).astype(np.int64)
    return SlicePlan(positions, lower, alpha, acquired)


# ----------------------------------------------------------------------------
# Pure functions of the latents


def mix_latents(z0: jax.Array, z1: jax.Array, alpha: jax.Array) -> jax.Array:
    """(1 - alpha)·z0 + alpha·z1 for one slice pair and one alpha (the paper's Eq.)."""
    alpha = alpha.astype(z0.dtype)
    return (1 - alpha) * z0 + alpha * z1


def interpolate_latents(z: jax.Array, lower: jax.Array, alpha: jax.Array) -> jax.Array:
    """New latents for every frame and position.

    z: (T, Z, h, w, c) latents of the acquired slices; lower, alpha: (P,).
    Returns (T, P, h, w, c). Written for one pair and one alpha, then vmapped
    over the alphas and over the frames.
    """

    def one_frame(z_frame):
        def one_position(n, a):
            return mix_latents(z_frame[n], z_frame[n + 1], a)

        return jax.vmap(one_position)(lower, alpha)

    return jax.vmap(one_frame)(z)


_interpolate_latents_jit = jax.jit(interpolate_latents)


def _bind(static: Any, state: Any) -> Any:
    """The model: merged from (graphdef, state), or the plain object itself."""
    return static if state is None else nnx.merge(static, state)


@functools.partial(jax.jit, static_argnums=0)
def _encode_batch(static: Any, state: Any, images: jax.Array) -> jax.Array:
    return _bind(static, state).encode(images)


@functools.partial(jax.jit, static_argnums=0)
def _decode_batch(static: Any, state: Any, latents: jax.Array) -> jax.Array:
    return _bind(static, state).decode(latents)


# Rows of an array already on the device: the start is traced, so one program
# serves every batch of a bucket.
@functools.partial(jax.jit, static_argnums=2)
def _take_rows(x: jax.Array, start: jax.Array, size: int) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(x, start, size, axis=0)


@functools.partial(jax.jit, donate_argnums=0)
def _put_rows(buffer: jax.Array, rows: jax.Array, start: jax.Array) -> jax.Array:
    return jax.lax.dynamic_update_slice_in_dim(buffer, rows.astype(buffer.dtype), start, axis=0)


# ----------------------------------------------------------------------------
# Batching helpers


def batch_ladder_size(n: int, n_devices: int, batch_size: int) -> int:
    """Batch size for `n` items: the device count times the smallest power of two
    covering n, capped at `batch_size` (itself rounded up to the device count).

    A short ladder of sizes keeps the number of compiled programs small while a
    small volume does not pay for a large padded batch.
    """
    cap = max(n_devices, math.ceil(batch_size / n_devices) * n_devices)
    per_device = max(1, math.ceil(n / n_devices))
    size = n_devices * (1 << (per_device - 1).bit_length())
    return min(size, cap)


def padded_size(n: int, multiple: int) -> int:
    return math.ceil(n / multiple) * multiple


def _pad_rows(x: np.ndarray | jax.Array, rows: int):
    """Pads axis 0 with zeros up to `rows` (batch padding, results discarded)."""
    missing = rows - x.shape[0]
    if missing == 0:
        return x
    xp = jnp if isinstance(x, jax.Array) else np
    return xp.concatenate([x, xp.zeros((missing,) + tuple(x.shape[1:]), x.dtype)], axis=0)


# ----------------------------------------------------------------------------
# The interpolator


class LatentInterpolator:
    """A model bound to the local devices, ready to interpolate many volumes.

    Build one per model and reuse it (`interpolator_for` pads to what the
    config's depth needs): parameters are placed on the devices once and the
    compiled programs are shared across volumes.
    """

    def __init__(
        self,
        model: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        size_multiple: int = DEFAULT_SIZE_BUCKET,
        devices: Sequence[jax.Device] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        # Local devices: on several hosts each process upsamples its own files.
        self.devices = list(devices) if devices is not None else jax.local_devices()
        self.mesh = jax.make_mesh((len(self.devices),), ("data",), axis_types=(AxisType.Auto,), devices=self.devices)
        self.batch_sharding = NamedSharding(self.mesh, P("data"))
        self.replicated = NamedSharding(self.mesh, P())
        self.batch_size = batch_size
        self.size_multiple = size_multiple
        if isinstance(model, nnx.Module):
            graphdef, state = nnx.split(model)
            self._static = graphdef
            self._state = jax.device_put(state, self.replicated)
        else:
            # Any object with traceable encode/decode; hashed by identity as a static argument.
            self._static = model
            self._state = None

    @property
    def n_devices(self) -> int:
        return len(self.devices)

    def _batches(self, n: int) -> tuple[int, int]:
        size = batch_ladder_size(n, self.n_devices, self.batch_size)
        return size, math.ceil(n / size)

    def encode(self, images: np.ndarray) -> jax.Array:
        """Latents of (N, H, W, 1) images, in fixed-size sharded batches; stays on device."""
        n = images.shape[0]
        size, count = self._batches(n)
        parts = []
        for i in range(count):
            chunk = _pad_rows(np.asarray(images[i * size : (i + 1) * size], np.float32), size)
            chunk = jax.device_put(chunk, self.batch_sharding)
            parts.append(_encode_batch(self._static, self._state, chunk))
        z = parts[0] if count == 1 else jnp.concatenate(parts, axis=0)
        return z[:n]

    def decode(self, latents: jax.Array, finish: Callable[[int, jax.Array], jax.Array] | None = None) -> np.ndarray:
        """Images (M, H, W, 1) on the host from latents (M, h, w, c), in batches.

        The next batch is dispatched before the previous one is copied to the
        host, so transfers overlap compute and at most two batches of images
        are on the device at once. finish(first row, decoded batch), if given,
        runs on the device before the copy (the residual mix).
        """
        m = latents.shape[0]
        size, count = self._batches(m)
        out = None
        pending: tuple[int, jax.Array] | None = None
        for i in range(count + 1):
            if i < count:
                chunk = _pad_rows(latents[i * size : (i + 1) * size], size)
                chunk = jax.device_put(chunk, self.batch_sharding)
                decoded = _decode_batch(self._static, self._state, chunk)
                current = (i, decoded if finish is None else finish(i * size, decoded))
            else:
                current = None
            if pending is not None:
                j, images = pending
                images = np.asarray(jax.device_get(images), np.float32)
                if out is None:
                    out = np.empty((m,) + images.shape[1:], np.float32)
                stop = min(m, (j + 1) * size)
                out[j * size : stop] = images[: stop - j * size]
            pending = current
        return out

    @property
    def home(self) -> jax.Device:
        """Where whole volumes live on the device path (jaxsr.device_pipeline); batches are sharded from here."""
        return self.devices[0]

    def encode_rows(self, images: jax.Array, n: int) -> jax.Array:
        """Latents of rows [0, n) of (R, H, W, 1) images on `home`, in sharded batches.

        R must hold the batches whole (R >= size x count of the ladder for n).
        Returns (R, h, w, c) on `home`; rows past the batches are zero. Nothing
        waits for the device.
        """
        size, count = self._batches(n)

        def batches():
            for i in range(count):
                batch = jax.device_put(_take_rows(images, i * size, size), self.batch_sharding)
                yield i * size, jax.device_put(_encode_batch(self._static, self._state, batch), self.home)

        return self._collect_rows(batches(), images.shape[0])

    def reconstruct_rows(self, latents: jax.Array, n: int) -> jax.Array:
        """D(z) of rows [0, n) of latents on `home` (R rows, whole batches as in decode_rows): (R, H, W, 1) on `home`.

        The residual mix's reconstructions of the acquired slices; nothing waits for the device.
        """
        return self._collect_rows(self.decode_rows(latents, n), latents.shape[0])

    def _collect_rows(self, batches: Iterator[tuple[int, jax.Array]], rows: int) -> jax.Array:
        """(first row, part) batches on `home` written into one (rows, ...) array there, zero past the batches."""
        out = None
        for start, part in batches:
            if out is None:
                out = jnp.zeros((rows,) + tuple(part.shape[1:]), part.dtype, device=self.home)
            out = _put_rows(out, part, start)
        return out

    def decode_rows(self, latents: jax.Array, n: int) -> Iterator[tuple[int, jax.Array]]:
        """(first row, images on `home`) for rows [0, n) of latents on `home`, one sharded batch at a time.

        Rows past n in the last batch are decoded padding. Nothing waits for the device.
        """
        size, count = self._batches(n)
        for i in range(count):
            batch = jax.device_put(_take_rows(latents, i * size, size), self.batch_sharding)
            yield i * size, jax.device_put(_decode_batch(self._static, self._state, batch), self.home)

    def interpolate_stack(
        self,
        stack: np.ndarray,
        positions: Sequence[float] | np.ndarray,
        *,
        keep_originals: bool = True,
        mix: str = DEFAULT_MIX,
        fallback: bool = False,
        residual_weight: float = 1.0,
    ) -> np.ndarray:
        """(X, Y, Z, T) stack -> (X, Y, len(positions), T) by latent interpolation.

        keep_originals: output slices at integer positions are copied from
        `stack` bit for bit; otherwise they are the model's output there (with
        mix='latent' its reconstructions, with 'residual' the acquired slices
        themselves, bit for bit). mix: jaxsr.mixes; residual_weight: the
        share of the residuals the residual mix adds (jaxsr.residual_mix).
        fallback: move each new slice toward the linear blend where the model
        reconstructs its neighbours poorly (jaxsr.fallback).
        """
        check_mix(mix)
        stack = np.asarray(stack, np.float32)
        if stack.ndim == 3:
            return self.interpolate_stack(stack[..., None], positions, keep_originals=keep_originals, mix=mix,
                                          fallback=fallback, residual_weight=residual_weight)[..., 0]
        if stack.ndim != 4:
            raise ValueError(f"stack must be (X, Y, Z) or (X, Y, Z, T), got shape {stack.shape}")
        nx, ny, nz, nt = stack.shape
        plan = plan_slices(positions, nz)
        out = np.empty((nx, ny, plan.positions.size, nt), np.float32)
        decode_idx = plan.new if keep_originals else np.arange(plan.positions.size)
        if keep_originals:
            out[:, :, plan.kept, :] = stack[:, :, plan.acquired[plan.kept], :]
        if decode_idx.size == 0:
            return out

        images = self._model_rows(stack)
        px, py = images.shape[1:3]
        z = self.encode(images)  # each acquired slice of each frame once
        z = z.reshape((nt, nz) + tuple(z.shape[1:]))
        lower = jnp.asarray(plan.lower[decode_idx])
        alpha = jnp.asarray(plan.alpha[decode_idx])
        z_new = _interpolate_latents_jit(z, lower, alpha)  # (T, P', h, w, c)
        z_new = z_new.reshape((nt * decode_idx.size,) + tuple(z_new.shape[2:]))
        finish = None
        if mix == RESIDUAL or fallback:
            # Row t·P' + j of z_new mixes acquired rows t·Z + lower and the next one.
            first = (np.arange(nt)[:, None] * nz + plan.lower[decode_idx][None, :]).ravel().astype(np.int32)
            finish = self._finish(images, z.reshape((nt * nz,) + tuple(z.shape[2:])), first,
                                  np.tile(plan.alpha[decode_idx], nt), (nz, nt),
                                  residual_weight if mix == RESIDUAL else None, fallback)

        decoded = self.decode(z_new, finish)[..., 0]  # (T·P', X', Y')
        decoded = decoded.reshape(nt, decode_idx.size, px, py)[:, :, :nx, :ny]
        out[:, :, decode_idx, :] = np.transpose(decoded, (2, 3, 1, 0))
        return out

    def _finish(self, images: np.ndarray, z: jax.Array, first: np.ndarray, alpha: np.ndarray, shape: tuple[int, int],
                residual: float | None, fallback: bool) -> Callable[[int, jax.Array], jax.Array]:
        """decode()'s finish: the residual mix and/or the fallback, with the acquired rows and their
        reconstructions waiting on `home`.

        images (N, H, W, 1) on the host and their latents z (N, ...) go to
        `home` padded to whole batches; first, alpha: per decoded row; shape:
        (slices, frames) of the acquired rows; residual: the residual mix's
        weight, None for none.
        """
        acquired, recon = self._acquired_on_home(images, z)
        weights = self._fallback_weights(acquired, recon, *shape) if fallback else None
        size, count = self._batches(first.size)
        first, second, alpha = (jax.device_put(_pad_rows(v, size * count), self.home) for v in (first, first + 1, alpha))

        def finish(start: int, decoded: jax.Array) -> jax.Array:
            decoded = jax.device_put(decoded, self.home)
            if residual is not None:
                decoded = residual_mix_batch(decoded, acquired, recon, first, second, alpha, start, weight=residual)
            if fallback:
                decoded = fallback_lib.fallback_batch(decoded, acquired, weights, first, second, alpha, start)
            return decoded

        return finish

    def _model_rows(self, stack: np.ndarray) -> np.ndarray:
        """(X, Y, Z, T) -> (T·Z, X', Y', 1), padded in-plane (edge values) to the size bucket."""
        nx, ny, nz, nt = stack.shape
        px, py = padded_size(nx, self.size_multiple), padded_size(ny, self.size_multiple)
        images = np.transpose(stack, (3, 2, 0, 1)).reshape(nt * nz, nx, ny)
        return np.pad(images, ((0, 0), (0, px - nx), (0, py - ny)), mode="edge")[..., None]

    def _acquired_on_home(self, images: np.ndarray, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(images, their reconstructions D(z)) on `home`, padded to whole batches."""
        size, count = self._batches(images.shape[0])
        acquired = jax.device_put(_pad_rows(images, size * count), self.home)
        return acquired, self.reconstruct_rows(jax.device_put(_pad_rows(z, size * count), self.home), images.shape[0])

    def _fallback_weights(self, acquired: jax.Array, recon: jax.Array, n_slices: int, n_frames: int) -> jax.Array:
        """jaxsr.fallback's w(n) of every acquired row on `home` (rows as `acquired`)."""
        loo = fallback_lib.leave_one_out_rows(n_slices, n_frames, acquired.shape[0])
        centre, below, above = (jax.device_put(v, self.home) for v in loo)
        return fallback_lib.acquired_weights(acquired, recon, centre, below, above,
                                             fallback_lib.has_leave_one_out(n_slices))

    def acquired_weights(self, stack: np.ndarray) -> np.ndarray:
        """jaxsr.fallback's w(n) of every acquired slice of an (X, Y, Z, T) stack in [0, 1]: (X, Y, Z, T) on the host.

        What `jaxsr upsample --confidence` blends onto the output slices.
        """
        nx, ny, nz, nt = stack.shape
        images = self._model_rows(stack)
        acquired, recon = self._acquired_on_home(images, self.encode(images))
        w = np.asarray(self._fallback_weights(acquired, recon, nz, nt))[: nz * nt, :nx, :ny, 0]
        return np.transpose(w.reshape(nt, nz, nx, ny), (2, 3, 1, 0))


# ----------------------------------------------------------------------------
# Binding a model: the one way every entry point gets its interpolator


def size_multiple_for(config: Any, size_bucket: int = DEFAULT_SIZE_BUCKET) -> int:
    """In-plane padding multiple: the size bucket, and divisible by 2**num_blocks."""
    return math.lcm(int(size_bucket), 2 ** int(config.model.num_blocks))


def interpolator_for(
    model: Any, config: Any, *, batch_size: int = DEFAULT_BATCH_SIZE, size_bucket: int = DEFAULT_SIZE_BUCKET
) -> LatentInterpolator:
    """`model` bound to the local devices with the in-plane padding its depth needs, ensembled
    over the slice plane's symmetries when config.inference.tta is 8 (jaxsr.tta)."""
    from jaxsr.tta import ensembled

    return LatentInterpolator(ensembled(model, int(config.inference.tta)), batch_size=batch_size,
                              size_multiple=size_multiple_for(config, size_bucket))


def load_interpolator(checkpoint: str | os.PathLike, *, batch_size: int = DEFAULT_BATCH_SIZE, mix: str | None = None,
                      tta: int | None = None, fallback: bool | None = None,
                      residual_weight: float | None = None) -> tuple[LatentInterpolator, Any]:
    """(interpolator, config) from a training workdir or one checkpoint step; raises CheckpointError.

    The checkpoint's config carries its recipe (config.inference: the mix and
    its residual weight, the ensemble, the fallback); the arguments, where
    given, replace it, and the config returned says what is used. `jaxsr upsample`, `reprocess`, `evaluate` and
    the demo all load their model here.
    """
    from jaxsr.config import validate
    from jaxsr.train import checkpoint as checkpoint_lib

    model, config = checkpoint_lib.load_for_inference(checkpoint)
    config = config.copy_and_resolve_references()  # the caller's changes stay out of the loaded one
    if mix is not None:
        config.inference.mix = check_mix(mix)
    if tta is not None:
        config.inference.tta = int(tta)
    if fallback is not None:
        config.inference.fallback = bool(fallback)
    if residual_weight is not None:
        config.inference.residual_weight = float(residual_weight)
    validate(config)  # an override out of range is refused in one line
    return interpolator_for(model, config, batch_size=batch_size), config


# ----------------------------------------------------------------------------
# Whole volumes: preprocessing, geometry, restoring the source's grid


@dataclasses.dataclass(frozen=True)
class PreparedVolume:
    """A volume preprocessed as in training, with its output slice positions."""

    volume: Volume
    stack: np.ndarray  # (X', Y', Z, T) in [0, 1] at the training in-plane spacing
    preprocessing: Any  # jaxsr.data.preprocess.Preprocessing
    positions: np.ndarray
    step: float  # input slices per output slice


def prepare_volume(volume: Volume, config: Any, *, factor: int | None = None, spacing: float | None = None) -> PreparedVolume:
    """CPU side before the model: preprocess and plan the output slices."""
    from jaxsr.config import target_spacing
    from jaxsr.data.preprocess import preprocess_volume

    positions = output_positions(volume.n_slices, factor=factor, spacing=spacing, slice_spacing_mm=volume.slice_spacing_mm)
    stack, preprocessing = preprocess_volume(volume, target_mm=target_spacing(config))
    return PreparedVolume(volume, stack, preprocessing, positions, positions_step(positions))


def finish_volume(prepared: PreparedVolume, interpolated: np.ndarray, *, replace_originals: bool = False) -> Volume:
    """CPU side after the model: back to the source grid and intensities, new geometry.

    Without replace_originals, the acquired slices are taken from the input
    volume itself (bit-identical) and only the new slices are restored.
    """
    volume = prepared.volume
    plan = plan_slices(prepared.positions, volume.n_slices)
    source = volume.data if volume.is_4d else volume.data[..., None]
    out = np.empty(source.shape[:2] + (plan.positions.size, source.shape[3]), np.float32)
    restore_idx = np.arange(plan.positions.size) if replace_originals else plan.new
    if restore_idx.size:
        out[:, :, restore_idx, :] = prepared.preprocessing.restore(interpolated[:, :, restore_idx, :])
    if not replace_originals:
        out[:, :, plan.kept, :] = source[:, :, plan.acquired[plan.kept], :]
    if not volume.is_4d:
        out = out[..., 0]
    return volume.with_data(out, resliced_affine(volume.affine, prepared.step))
