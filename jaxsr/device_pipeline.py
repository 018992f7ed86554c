"""One volume on the device: preprocessing, the model, restoring and assembling, in bucketed shapes.

The host's part of a volume is reading it, one copy into a padded layout
(`host_layout`) and, once the device is done, one copy back (`collect`).
Between them everything is jitted and dispatched without waiting (`dispatch`):

    raw slices -> prepare_images (in-plane resampling to the model's spacing,
    percentile scaling) -> encode each acquired slice once -> mix latents for
    every new slice of every frame -> decode (with mix='residual': plus the
    neighbours' residuals, from one more decode of the acquired latents;
    jaxsr.residual_mix) -> restore_images (back to the
    source grid and intensities) -> assemble (acquired slices copied from the
    raw ones bit for bit, unless replace_originals)

Rows are the slices of all frames, frame-major (row t·Z + z). Source and
output slices are (y, x), NIfTI's Fortran order seen from C, so the host
copies nothing to transpose; the model sees (x, y), as in training.

Shapes are padded to buckets so that an archive of mixed matrix sizes, slice
and frame counts compiles a bounded set of programs: in-plane sizes to the
interpolator's size multiple, row counts to its batch size times one of 1, 2,
3, 4, 6, 8, 12, 16, ... The padding (at most a third of the rows) only goes
through the cheap programs; the model runs the batches that hold real slices.
A volume lives on the interpolator's first local device; model batches are
sharded over all of them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxsr.config import target_spacing
from jaxsr.data.preprocess import inplane_shape, intensity_scale
from jaxsr.data.preprocess_jax import padded_matrix, percentile_ranks, prepare_images, restore_images
from jaxsr import fallback as fallback_lib
from jaxsr.errors import VolumeError
from jaxsr.interpolate import LatentInterpolator, SlicePlan, batch_ladder_size, mix_latents, padded_size, plan_slices
from jaxsr.io.nifti import Volume, output_positions, positions_step, resliced_affine
from jaxsr.mixes import DEFAULT_MIX, RESIDUAL, check_mix
from jaxsr.residual_mix import residual_mix_batch


def count_bucket(count: int) -> int:
    """The smallest of 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (2^k and 3·2^(k-1)) that is >= count."""
    power = 1 << max(count - 1, 0).bit_length()
    return 3 * power // 4 if 3 * power // 4 >= count else power


def row_bucket(n: int, interpolator: LatentInterpolator) -> int:
    """Rows for n slices: whole model batches (the interpolator's ladder), their count bucketed."""
    size = batch_ladder_size(max(n, 1), interpolator.n_devices, interpolator.batch_size)
    return size * count_bucket(-(-max(n, 1) // size))


@dataclasses.dataclass(frozen=True, eq=False)
class VolumePlan:
    """What the device programs need, from a volume's shape and spacing alone (no voxel data).

    Index arrays are padded to the row buckets (padding entries are 0).
    mix_first, mix_second, mix_alpha: per decoded row t·D + j, the latent rows
    and weight mixed for decoded position j of frame t. from_source, out_index:
    per output row t·P + p, whether it is an acquired slice copied from the
    source (row out_index there) or decoded row out_index. mix: jaxsr.mixes.
    fallback: move new slices toward the linear blend (jaxsr.fallback).
    """

    source_shape: tuple[int, int, int, int]  # (X, Y, Z, T)
    prepared_xy: tuple[int, int]  # at the model's in-plane spacing
    raw_xy: tuple[int, int]  # source in-plane size, padded
    model_xy: tuple[int, int]  # model input size, padded
    rows: tuple[int, int, int]  # padded row counts: source, decoded, output
    slices: SlicePlan
    step: float  # input slices per output slice
    n_decoded: int  # rows the model decodes (frames x decoded positions)
    mix_first: np.ndarray
    mix_second: np.ndarray
    mix_alpha: np.ndarray
    from_source: np.ndarray
    out_index: np.ndarray
    mix: str = DEFAULT_MIX
    residual_weight: float = 1.0  # the residual mix's share of the residuals (jaxsr.residual_mix)
    fallback: bool = False  # jaxsr.fallback, with its leave-one-out rows (per source row)
    loo_rows: tuple[np.ndarray, np.ndarray, np.ndarray] = ()

    @property
    def n_source(self) -> int:
        return self.source_shape[2] * self.source_shape[3]

    @property
    def n_out(self) -> int:
        return self.slices.positions.size * self.source_shape[3]


def _padded(values: np.ndarray, rows: int, dtype) -> np.ndarray:
    out = np.zeros(rows, dtype)
    out[: values.size] = values
    return out


def plan_volume(interpolator: LatentInterpolator, config: Any, volume: Volume, *, factor: int | None = None,
                spacing: float | None = None, replace_originals: bool = False, mix: str = DEFAULT_MIX,
                fallback: bool = False, residual_weight: float = 1.0) -> VolumePlan:
    """The plan for `volume` (its shape, spacing and slice geometry) at the config's in-plane spacing."""
    check_mix(mix)
    shape = volume.data.shape if volume.is_4d else volume.data.shape + (1,)
    nx, ny, nz, nt = (int(n) for n in shape)
    positions = output_positions(nz, factor=factor, spacing=spacing, slice_spacing_mm=volume.slice_spacing_mm)
    slices = plan_slices(positions, nz)
    prepared = inplane_shape((nx, ny), volume.spacing[:2], target_spacing(config))
    multiple = interpolator.size_multiple
    n_pos = positions.size
    decoded = np.arange(n_pos) if replace_originals else slices.new
    frames = np.arange(nt)[:, None]
    rows = tuple(row_bucket(n, interpolator) for n in (nz * nt, decoded.size * nt, n_pos * nt))

    first = (frames * nz + slices.lower[decoded][None, :]).ravel()
    alpha = np.broadcast_to(slices.alpha[decoded][None, :], (nt, decoded.size)).ravel()
    # Output row t·P + p: acquired slice (row t·Z + n of the source) or decoded row t·D + rank of p.
    from_source = np.zeros(n_pos, bool) if replace_originals else slices.acquired >= 0
    rank = np.full(n_pos, -1)
    rank[decoded] = np.arange(decoded.size)
    index = np.where(from_source[None, :], frames * nz + slices.acquired[None, :], frames * decoded.size + rank[None, :])
    return VolumePlan(
        source_shape=(nx, ny, nz, nt),
        prepared_xy=prepared,
        raw_xy=(padded_size(nx, multiple), padded_size(ny, multiple)),
        model_xy=(padded_size(prepared[0], multiple), padded_size(prepared[1], multiple)),
        rows=rows,
        slices=slices,
        step=positions_step(positions),
        n_decoded=decoded.size * nt,
        mix_first=_padded(first, rows[1], np.int32),
        mix_second=_padded(first + 1, rows[1], np.int32),
        mix_alpha=_padded(alpha, rows[1], np.float32),
        from_source=_padded(np.broadcast_to(from_source, (nt, n_pos)).ravel(), rows[2], bool),
        out_index=_padded(index.ravel(), rows[2], np.int32),
        mix=mix,
        residual_weight=float(residual_weight),
        fallback=bool(fallback),
        loo_rows=fallback_lib.leave_one_out_rows(nz, nt, rows[0]) if fallback else (),
    )


def host_layout(volume: Volume, plan: VolumePlan) -> np.ndarray:
    """(rows, Yb, Xb) float32: the source slices frame-major and zero-padded, the one copy before the device."""
    nx, ny, nz, nt = plan.source_shape
    data = volume.data if volume.is_4d else volume.data[..., None]
    layout = np.zeros((plan.rows[0], plan.raw_xy[1], plan.raw_xy[0]), np.float32)
    layout[: nz * nt, :ny, :nx] = data.T.reshape(nz * nt, ny, nx)  # a view for Fortran-ordered data
    return layout


@functools.lru_cache(maxsize=64)
def _matrix(n_in: int, n_out: int, rows: int, cols: int, edge: bool, device: jax.Device) -> jax.Array:
    return jax.device_put(padded_matrix(n_in, n_out, rows, cols, edge=edge), device)


@jax.jit
def mix_rows(latents: jax.Array, first: jax.Array, second: jax.Array, alpha: jax.Array) -> jax.Array:
    """Every decoded row's latent: mix_latents for one pair and one alpha, vmapped over rows (all frames)."""

    def one_row(i, j, a):
        return mix_latents(latents[i], latents[j], a)

    return jax.vmap(one_row)(first, second, alpha)


def _restore(restored: jax.Array, decoded: jax.Array, start: jax.Array, back_x: jax.Array, back_y: jax.Array,
             lo: jax.Array, hi: jax.Array) -> jax.Array:
    rows = restore_images(decoded[..., 0], back_x, back_y, lo, hi)
    return jax.lax.dynamic_update_slice_in_dim(restored, rows, start, axis=0)


_restore_into = jax.jit(_restore, donate_argnums=0)


@functools.partial(jax.jit, donate_argnums=0, static_argnames=("residual", "fallback"))
def _restore_finished_into(restored: jax.Array, decoded: jax.Array, start: jax.Array, back_x: jax.Array,
                           back_y: jax.Array, lo: jax.Array, hi: jax.Array, images: jax.Array, recon: jax.Array,
                           weights: jax.Array | None, first: jax.Array, second: jax.Array, alpha: jax.Array, *,
                           residual: float | None, fallback: bool) -> jax.Array:
    """One decoded batch: the residual mix (residual: its weight, None for none) and/or the fallback in the
    model's [0, 1] space, then the restore, as one program."""
    if residual is not None:
        decoded = residual_mix_batch(decoded, images, recon, first, second, alpha, start, weight=residual)
    if fallback:
        decoded = fallback_lib.fallback_batch(decoded, images, weights, first, second, alpha, start)
    return _restore(restored, decoded, start, back_x, back_y, lo, hi)


@jax.jit
def assemble(source: jax.Array, restored: jax.Array, from_source: jax.Array, index: jax.Array) -> jax.Array:
    """Output rows: source[index] where from_source (a copy, bit for bit), else restored[index]."""
    kept = source[jnp.where(from_source, index, 0)]
    new = restored[jnp.where(from_source, 0, index)]
    return jnp.where(from_source[:, None, None], kept, new)


@dataclasses.dataclass(frozen=True)
class OnDevice:
    """A dispatched volume: device arrays that may still be computing."""

    out: jax.Array  # (rows, Yb, Xb) output slices, frame-major
    lo: jax.Array  # intensities mapped to 0 and 1
    hi: jax.Array


def dispatch(interpolator: LatentInterpolator, plan: VolumePlan, layout: np.ndarray) -> OnDevice:
    """Starts one volume's programs; returns without waiting for any of them."""
    home = interpolator.home
    (nx, ny, _, _), (px, py) = plan.source_shape, plan.prepared_xy
    (bx, by), (mx, my) = plan.raw_xy, plan.model_xy
    raw = jax.device_put(layout, home)
    ranks, fractions = percentile_ranks(plan.n_source * px * py)
    images, lo, hi = prepare_images(raw, _matrix(nx, px, mx, bx, True, home), _matrix(ny, py, my, by, True, home),
                                    np.array([plan.n_source, px, py], np.int32), ranks, fractions)
    restored = jnp.zeros((plan.rows[1], by, bx), jnp.float32, device=home)
    if plan.n_decoded:
        latents = interpolator.encode_rows(images, plan.n_source)
        first, second, alpha = (jax.device_put(v, home) for v in (plan.mix_first, plan.mix_second, plan.mix_alpha))
        mixed = mix_rows(latents, first, second, alpha)
        restore = _restore_into
        if plan.mix == RESIDUAL or plan.fallback:
            recon = interpolator.reconstruct_rows(latents, plan.n_source)
            weights = None
            if plan.fallback:
                centre, below, above = (jax.device_put(v, home) for v in plan.loo_rows)
                weights = fallback_lib.acquired_weights(images, recon, centre, below, above,
                                                        fallback_lib.has_leave_one_out(plan.source_shape[2]))
            restore = functools.partial(_restore_finished_into, images=images, recon=recon, weights=weights,
                                        first=first, second=second, alpha=alpha,
                                        residual=plan.residual_weight if plan.mix == RESIDUAL else None,
                                        fallback=plan.fallback)
        back_x, back_y = _matrix(px, nx, bx, mx, False, home), _matrix(py, ny, by, my, False, home)
        for start, decoded in interpolator.decode_rows(mixed, plan.n_decoded):
            restored = restore(restored, decoded, start, back_x, back_y, lo, hi)
    return OnDevice(assemble(raw, restored, plan.from_source, plan.out_index), lo, hi)


def collect(result: OnDevice, plan: VolumePlan, volume: Volume) -> Volume:
    """Waits for `result` and copies it to the host as the output Volume (geometry resliced)."""
    try:
        intensity_scale(float(result.lo), float(result.hi))
    except ValueError as e:  # the scipy path refuses the same volume in preprocess_volume
        raise VolumeError(volume.path or "<memory>", str(e)) from None
    nx, ny, _, nt = plan.source_shape
    n_pos = plan.slices.positions.size
    out = np.asarray(result.out)[: plan.n_out, :ny, :nx]
    data = out.reshape(nt, n_pos, ny, nx).T  # (X, Y, P, T), a view
    if not volume.is_4d:
        data = data[..., 0]
    return volume.with_data(data, resliced_affine(volume.affine, plan.step))


# ----------------------------------------------------------------------------
# Counting compiled programs (XLA backend compilations) in this process

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compiles = [0]


def _on_event(event: str, duration: float, **_: Any) -> None:
    if event == _COMPILE_EVENT:
        _compiles[0] += 1


jax.monitoring.register_event_duration_secs_listener(_on_event)


def compiled_programs() -> int:
    """XLA programs compiled in this process so far (a persistent-cache hit does not count)."""
    return _compiles[0]
