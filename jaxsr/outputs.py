"""One upsampled output on disk: its NIfTI bytes, the JSON sidecar that says how it was made, both written atomically.

The sidecar is renamed into place before its NIfTI, so a NIfTI under its final
name always has its sidecar (jaxsr.reprocess relies on that after a kill -9).
Sidecars are deterministic (no time stamps), so a resumed run writes the same
bytes as an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any

import numpy as np

import jaxsr
from jaxsr.io.atomic import atomic_output, check_output, write_bytes_atomic
from jaxsr.io.nifti import Volume, encode
from jaxsr.upsample import UpsampleSettings

METHOD = "jaxsr-latent-interpolation"
# Test hook: seconds to sleep between writing an output NIfTI's temporary and
# renaming it, so that a test can kill a run in the middle of a write.
WRITE_SLEEP_ENV = "JAXSR_REPROCESS_TEST_WRITE_SLEEP_S"


def sidecar_path(output: str | os.PathLike) -> pathlib.Path:
    output = pathlib.Path(output)
    return output.with_name(output.name + ".json")


def config_to_dict(config: Any) -> Any:
    if hasattr(config, "to_dict"):
        return config.to_dict()
    return dict(config) if config is not None else None


def build_sidecar(
    source: Volume, result: Volume, *, source_sha256: str, config: Any, settings: UpsampleSettings, dtype: np.dtype
) -> dict[str, Any]:
    """What made this output, deterministically (no time stamps)."""
    from jaxsr.config import target_spacing
    from jaxsr.data.preprocess import inplane_label

    return {
        "method": METHOD,
        "factor": settings.factor,
        "spacing_mm": settings.spacing,
        "replace_originals": bool(settings.replace_originals),
        "preprocess": settings.preprocess,
        "mix": settings.mix,
        "tta": int(config.inference.tta),  # the interpolator's ensemble (jaxsr.tta), from the same config
        "residual_weight": float(settings.residual_weight),
        "fallback": bool(settings.fallback),
        "checkpoint": os.path.abspath(settings.checkpoint) if settings.checkpoint is not None else None,
        "config": config_to_dict(config),
        # The grid the model saw: "1.4 mm", or "native (1.5 x 1.5 mm)" (the source's own, not resampled).
        "model_inplane_spacing": inplane_label(target_spacing(config), source.spacing[:2]),
        "source": {
            "path": os.path.abspath(source.path) if source.path else None,
            "sha256": source_sha256,
            "shape": list(source.data.shape),
            "spacing_mm": list(source.spacing),
        },
        "output": {
            "shape": list(result.data.shape),
            "spacing_mm": [float(s) for s in result.spacing],
            "dtype": np.dtype(dtype).name,
        },
        "jaxsr_version": jaxsr.version(),
    }


def output_dtype(volume: Volume, keep_dtype: bool) -> np.dtype:
    return np.dtype(volume.header.get_data_dtype()) if keep_dtype else np.dtype(np.float32)


def write_result(output: str | os.PathLike, nifti: bytes, sidecar: dict[str, Any], *, overwrite: bool) -> None:
    """Sidecar first, then the NIfTI, each atomically (see the module docstring)."""
    output = check_output(output, overwrite=overwrite)
    text = json.dumps(sidecar, indent=2, sort_keys=True, default=str) + "\n"
    side = sidecar_path(output)
    had_sidecar = side.exists()
    write_bytes_atomic(side, text.encode(), overwrite=True)
    pause_s = float(os.environ.get(WRITE_SLEEP_ENV, "0") or 0)
    try:
        with atomic_output(output, overwrite=overwrite) as tmp:
            tmp.write_bytes(nifti)
            if pause_s:
                time.sleep(pause_s)
    except BaseException:
        # A sidecar with no volume would describe nothing (disk full, say): take back ours.
        if not had_sidecar:
            side.unlink(missing_ok=True)
        raise


def encode_upsampled(source: Volume, result: Volume, output: pathlib.Path, *, source_sha256: str, config: Any,
                     settings: UpsampleSettings) -> tuple[bytes, dict[str, Any]]:
    """The output NIfTI's bytes in the asked dtype, and the sidecar that says how it was made."""
    dtype = output_dtype(source, settings.keep_dtype)
    sidecar = build_sidecar(source, result, source_sha256=source_sha256, config=config, settings=settings, dtype=dtype)
    return encode(result, output, dtype), sidecar
