"""What the in-process suites run on: named configurations, models and phantom volumes.

Configurations are jaxsr's named ones (`jaxsr.config.load_config("acdc_paper")`);
--quick runs use the named "tiny". Volumes are made on the fly: an int16
cine-like 4D phantom with ACDC's matrix, spacing and frame count by default.
"""

from __future__ import annotations

import pathlib

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
