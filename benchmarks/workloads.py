"""What the in-process suites run on: named configurations, models, phantom volumes and datasets.

Configurations are jaxsr's named ones (`jaxsr.config.load_config("acdc_paper")`);
--quick runs use the named "tiny". Volumes are made on the fly: an int16
cine-like 4D phantom with ACDC's matrix, spacing and frame count by default.
"""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np

PAPER, TINY = "acdc_paper", "tiny"
# ACDC cine: ~216 x 256 in-plane at ~1.5 mm, ~10 slices of 10 mm, ~30 frames.
ACDC_SHAPE = (216, 256, 10, 30)
ACDC_SPACING = (1.5, 1.5, 10.0)


def make_model(config, *, seed: int = 0):
    """jaxsr.models.autoencoder.AutoEncoder from config.model, random init, eval mode."""
    from flax import nnx

    from jaxsr.models.autoencoder import AutoEncoder

    model = AutoEncoder(config.model, rngs=nnx.Rngs(seed))
    model.eval()
    return model


def model_source() -> str:
    return "jaxsr.models.autoencoder.AutoEncoder"


def phantom_volume(shape=ACDC_SHAPE, spacing=ACDC_SPACING, seed: int = 0):
    """int16 cine-like nibabel image: a beating bright disc on textured background."""
    import nibabel as nib
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    nx, ny, nz, nt = shape
    xx, yy = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), indexing="ij")
    background = ndimage.gaussian_filter(rng.normal(size=(nx, ny)), 4) * 300 + 200
    t = np.arange(nt)[None, None, None, :]
    z = np.arange(nz)[None, None, :, None]
    radius = (0.25 + 0.05 * np.sin(2 * np.pi * t / nt)) * (1 - 0.06 * z)
    disc = (xx[..., None, None] ** 2 + yy[..., None, None] ** 2) < radius**2
    data = background[..., None, None] + 700 * disc + rng.normal(scale=20, size=shape)
    data = np.clip(data, 0, 4000).astype(np.int16)
    affine = np.diag(list(spacing) + [1.0])
    image = nib.Nifti1Image(data, affine)
    image.header.set_qform(affine, code=1)
    image.header.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    image.header.set_zooms(tuple(spacing) + (0.03,))
    return image


def write_phantoms(folder: pathlib.Path, count: int, shape=ACDC_SHAPE, spacing=ACDC_SPACING) -> list[pathlib.Path]:
    """`count` phantom volumes as folder/patientNNN/cine_4d.nii.gz (seeds 1..count)."""
    import nibabel as nib

    paths = []
    for i in range(count):
        path = pathlib.Path(folder) / f"patient{i:03d}" / "cine_4d.nii.gz"
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(phantom_volume(shape, spacing, seed=i + 1), str(path))
        paths.append(path)
    return paths


def phantom_split(folder: pathlib.Path, s: dict[str, Any]) -> tuple[list[pathlib.Path], list[pathlib.Path], dict]:
    """(train, test) volumes of a phantom dataset made here; test = the phantom's held-out patients."""
    from jaxsr.data import phantom

    spec = phantom.PhantomSpec(**s["phantom_spec"])
    manifest = phantom.write_phantom_dataset(folder, s["patients"], seed=0, spec=spec)

    def path(name):
        return folder / "training" / name / f"{name}_4d.nii.gz"

    return ([path(n) for n in manifest["train_patients"]], [path(n) for n in manifest["test_patients"]],
            {"source": "jaxsr.data.phantom", "seed": 0, "spec": s["phantom_spec"],
             "train_patients": manifest["train_patients"], "test_patients": manifest["test_patients"]})


def training_stacks(train_paths: list[pathlib.Path], target_mm: float | None) -> list[np.ndarray]:
    """The training volumes preprocessed as the trainer sees them: (X, Y, Z, T) in [0, 1]."""
    from jaxsr.data.datasets import preprocess_files

    return [s if s.ndim == 4 else s[..., None] for s in preprocess_files(train_paths, target_mm)]
