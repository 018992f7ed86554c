"""What the suites run on: configurations, models and phantom volumes.

Configurations come from configs/NAME.py (get_config()); a tiny variant of the
same schema serves --quick runs. Volumes are made on the fly: an int16 cine-like
4D phantom with ACDC's matrix, spacing and frame count by default.
"""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

import numpy as np


REPO = pathlib.Path(__file__).resolve().parents[1]
PAPER, FOLLOWUP = "acdc_paper", "acdc_followup"
# ACDC cine: ~216 x 256 in-plane at ~1.5 mm, ~10 slices of 10 mm, ~30 frames.
ACDC_SHAPE = (216, 256, 10, 30)
ACDC_SPACING = (1.5, 1.5, 10.0)


def load_config(name: str):
    """configs/NAME.py:get_config(); NAME may also be a path to such a file."""
    path = pathlib.Path(name)
    if path.suffix != ".py":
        path = REPO / "configs" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such config file")
    spec = importlib.util.spec_from_file_location(f"_bench_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    return config


def tiny(config, *, base_features: int = 4, bottleneck: int = 8):
    """The same architecture (depth kept) at toy widths, for --quick runs and tests."""
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.model.base_features = base_features
        config.model.bottleneck_features = bottleneck
        config.model.latent_features = max(2, int(config.model.latent_features) // 8)
    return config


def make_model(config, *, seed: int = 0, train: bool = False):
    """jaxsr.models.autoencoder.AutoEncoder from config.model, random init."""
    from flax import nnx

    from jaxsr.models.autoencoder import AutoEncoder

    model = AutoEncoder(config.model, rngs=nnx.Rngs(seed))
    if train:
        model.train()
    else:
        model.eval()
    return model


def model_source() -> str:
    return "jaxsr.models.autoencoder.AutoEncoder"


def param_count(model) -> int:
    import jax
    from flax import nnx

    return int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))


def conv_layers(model_config) -> list[tuple[int, int, int]]:
    """(downsampling level, C_in, C_out) of every 3x3 conv of the paper architecture.

    Level l means the conv runs at H/2^l x W/2^l. Mirrors the paper's Sec. 3 (and
    jaxsr.models.autoencoder): encoder blocks of two convs then pooling, two convs
    to the bottleneck and the latent; the decoder the reverse, two convs at the end.
    """
    blocks = int(model_config.num_blocks)
    widths = [int(model_config.base_features) * 2**i for i in range(blocks)]
    bottleneck, latent = int(model_config.bottleneck_features), int(model_config.latent_features)
    layers, cin = [], 1
    for level, w in enumerate(widths):
        layers += [(level, cin, w), (level, w, w)]
        cin = w
    layers += [(blocks, cin, bottleneck), (blocks, bottleneck, latent)]
    layers += [(blocks, latent, bottleneck)]
    cin = bottleneck
    for level, w in reversed(list(enumerate(widths))):
        layers += [(level + 1, cin, w), (level + 1, w, w)]
        cin = w
    layers += [(0, cin, cin), (0, cin, 1)]
    return layers


def forward_conv_flops(model_config, image_size: int) -> float:
    """2·H·W·Cin·Cout·9 summed over the convs: the forward pass of one image."""
    return float(sum(2 * (image_size >> level) ** 2 * cin * cout * 9 for level, cin, cout in conv_layers(model_config)))


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


def describe(config) -> dict[str, Any]:
    """The settings that decide speed, for the JSON."""
    return {"model": dict(config.model), "crop_size": int(config.data.get("crop_size", 128))}
