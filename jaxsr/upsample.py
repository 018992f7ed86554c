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
    """

    factor: int | None = None
    spacing: float | None = None
    replace_originals: bool = False
    keep_dtype: bool = False
    checkpoint: str | os.PathLike | None = None
    preprocess: str = "device"
    mix: str = DEFAULT_MIX


class DeviceStages:
    """The device path: plan and lay out on the host, everything else jitted (jaxsr.device_pipeline)."""

    def __init__(self, interpolator: LatentInterpolator, config: Any, settings: UpsampleSettings):
        self.interpolator, self.config, self.settings = interpolator, config, settings

    def prepare(self, volume: Volume) -> Any:
        s = self.settings
        plan = device_pipeline.plan_volume(self.interpolator, self.config, volume, factor=s.factor, spacing=s.spacing,
                                           replace_originals=s.replace_originals, mix=s.mix)
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
                                                   mix=self.settings.mix)

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
) -> Volume:
    """A thin-slice Volume from a thick-slice one (3D or 4D), geometry exact.

    Output slice j lies at input slice coordinate j·step (factor k: step 1/k;
    spacing s: step s / slice spacing), spanning first to last acquired slice.
    preprocess: the path (module docstring). mix: how new slices are made
    from the latents (jaxsr.mixes), applied in the model's [0, 1] space
    before the restore.
    """
    settings = UpsampleSettings(factor=factor, spacing=spacing, replace_originals=replace_originals,
                                preprocess=preprocess, mix=mix)
    stages = stages_for(interpolator, config, settings)
    prepared = stages.prepare(volume)
    started = stages.start(prepared)
    stages.wait(started)
    return stages.finish(volume, prepared, started)
