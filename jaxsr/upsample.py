"""One volume upsampled in memory: the settings an output is asked for, and the two paths that make it.

Both paths run the same four stages, each a method of a `*Stages` object:
prepare (host), start (dispatches device work; must not wait for it), wait
(for the device) and finish (host, the output Volume). `upsample_volume`
runs them in a row; `jaxsr reprocess` (jaxsr.reprocess_pipeline) runs each
stage on its own thread so that the device never waits for the host.

- 'device' (DeviceStages): preprocessing, the model, the restore and the
  output assembly as jitted programs next to the model (jaxsr.device_pipeline);
- 'scipy' (ScipyStages): preprocessing and restore on the host, the model
  streamed in batches (jaxsr.interpolate); the reference the device path is
  tested against, and the fallback for a volume the device cannot hold.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from jaxsr import device_pipeline
from jaxsr.errors import UserError
from jaxsr.interpolate import LatentInterpolator, finish_volume, prepare_volume
from jaxsr.io.nifti import Volume
from jaxsr.mixes import DEFAULT_MIX

PREPROCESSING = ("device", "scipy")


@dataclasses.dataclass(frozen=True)
class UpsampleSettings:
    """What an output is asked to be (`--factor` or `--spacing`, and the rest), recorded in its sidecar.

    preprocess: one of PREPROCESSING. mix: how new slices are made from the latents (jaxsr.mixes).
    residual_weight: the residual mix's share of the residuals (jaxsr.residual_mix).
    fallback: move new slices toward the linear blend where the model errs (jaxsr.fallback).
    """

    factor: int | None = None
    spacing: float | None = None
    replace_originals: bool = False
    keep_dtype: bool = False
    checkpoint: str | os.PathLike | None = None
    preprocess: str = "device"
    mix: str = DEFAULT_MIX
    residual_weight: float = 1.0
    fallback: bool = False

    @classmethod
    def with_recipe(cls, config: Any, **fields: Any) -> "UpsampleSettings":
        """Settings with the mix and fallback of `config`'s recipe (config.inference; its ensemble is the interpolator's)."""
        recipe = config.inference
        return cls(mix=recipe.mix, residual_weight=float(recipe.residual_weight), fallback=bool(recipe.fallback),
                   **fields)


class DeviceStages:
    """The device path: plan and lay out on the host, everything else jitted (jaxsr.device_pipeline)."""

    def __init__(self, interpolator: LatentInterpolator, config: Any, settings: UpsampleSettings):
        self.interpolator, self.config, self.settings = interpolator, config, settings

    def prepare(self, volume: Volume) -> Any:
        s = self.settings
        plan = device_pipeline.plan_volume(self.interpolator, self.config, volume, factor=s.factor, spacing=s.spacing,
                                           replace_originals=s.replace_originals, mix=s.mix, fallback=s.fallback,
                                           residual_weight=s.residual_weight)
        return plan, device_pipeline.host_layout(volume, plan)

    def start(self, prepared: Any) -> Any:
        return device_pipeline.dispatch(self.interpolator, *prepared)

    def wait(self, started: Any) -> None:
        import jax

        jax.block_until_ready(started.out)

    def finish(self, volume: Volume, prepared: Any, started: Any) -> Volume:
        return device_pipeline.collect(started, prepared[0], volume)


class ScipyStages:
    """The host reference path: scipy preprocessing and restore, the model streamed in batches."""

    def __init__(self, interpolator: LatentInterpolator, config: Any, settings: UpsampleSettings):
        self.interpolator, self.config, self.settings = interpolator, config, settings

    def prepare(self, volume: Volume) -> Any:
        return prepare_volume(volume, self.config, factor=self.settings.factor, spacing=self.settings.spacing)

    def start(self, prepared: Any) -> Any:
        return self.interpolator.interpolate_stack(prepared.stack, prepared.positions,
                                                   keep_originals=not self.settings.replace_originals,
                                                   mix=self.settings.mix, fallback=self.settings.fallback,
                                                   residual_weight=self.settings.residual_weight)

    def wait(self, started: Any) -> None:
        pass  # interpolate_stack returned host arrays

    def finish(self, volume: Volume, prepared: Any, started: Any) -> Volume:
        return finish_volume(prepared, started, replace_originals=self.settings.replace_originals)


def stages_for(interpolator: LatentInterpolator, config: Any, settings: UpsampleSettings) -> DeviceStages | ScipyStages:
    if settings.preprocess == "device":
        return DeviceStages(interpolator, config, settings)
    if settings.preprocess == "scipy":
        return ScipyStages(interpolator, config, settings)
    raise UserError(f"preprocess must be one of {PREPROCESSING}, got {settings.preprocess!r}")


def upsample_volume(
    interpolator: LatentInterpolator,
    config: Any,
    volume: Volume,
    *,
    factor: int | None = None,
    spacing: float | None = None,
    replace_originals: bool = False,
    preprocess: str = "device",
    mix: str = DEFAULT_MIX,
    fallback: bool = False,
    residual_weight: float = 1.0,
) -> Volume:
    """A thin-slice Volume from a thick-slice one (3D or 4D), geometry exact.

    Output slice j lies at input slice coordinate j·step (factor k: step 1/k;
    spacing s: step s / slice spacing), spanning first to last acquired slice.
    preprocess: the path (module docstring). mix: how new slices are made
    from the latents (jaxsr.mixes) and fallback (jaxsr.fallback), both in the
    model's [0, 1] space before the restore.
    """
    settings = UpsampleSettings(factor=factor, spacing=spacing, replace_originals=replace_originals,
                                preprocess=preprocess, mix=mix, fallback=fallback, residual_weight=residual_weight)
    stages = stages_for(interpolator, config, settings)
    prepared = stages.prepare(volume)
    started = stages.start(prepared)
    stages.wait(started)
    return stages.finish(volume, prepared, started)


def confidence_volume(interpolator: LatentInterpolator, config: Any, volume: Volume, settings: UpsampleSettings) -> Volume:
    """jaxsr.fallback's weight of linear interpolation in every voxel of the output `settings` ask for.

    On the output grid and geometry: at a new slice the weight its neighbours'
    w(n) blend to (what the fallback uses, whether it is on or not), 0 at an
    acquired slice copied from the input, w(n) itself there with
    replace_originals. 0: the model reproduces the neighbours exactly there;
    towards 1: it does not, and linear interpolation would be trusted instead.
    Computed on the host path (in-plane preprocessing, the acquired slices'
    reconstructions), then resampled back to the source's in-plane grid.
    """
    from jaxsr.data.preprocess import resample_inplane
    from jaxsr.interpolate import plan_slices
    from jaxsr.io.nifti import resliced_affine

    prepared = prepare_volume(volume, config, factor=settings.factor, spacing=settings.spacing)
    weights = interpolator.acquired_weights(prepared.stack)  # (X', Y', Z, T)
    plan = plan_slices(prepared.positions, volume.n_slices)
    upper = np.minimum(plan.lower + 1, volume.n_slices - 1)
    alpha = plan.alpha[None, None, :, None].astype(np.float32)
    out = (1 - alpha) * weights[:, :, plan.lower] + alpha * weights[:, :, upper]
    if not settings.replace_originals:
        out[:, :, plan.kept] = 0.0
    out = np.clip(resample_inplane(out, prepared.preprocessing.source_shape_xy), 0.0, 1.0)  # cubic overshoot
    return volume.with_data(out if volume.is_4d else out[..., 0], resliced_affine(volume.affine, prepared.step))
