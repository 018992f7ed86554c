"""A TFDS builder: an ACDC tree or a folder of volumes -> preprocessed 2D slices.

The user's copy is the manual dir (nothing is downloaded). Each example is one
in-plane slice after the paper's preprocessing (1st..99th percentile to [0, 1],
resampled to the config's data.target_spacing_mm), with the volume it came from
(relative path), its frame and slice index, so stacks and triplets can be
rebuilt (`load_stacks`). Splits are jaxsr's (datasets.make_split): for ACDC the
paper's 12 test patients and a fixed 70 / 18 train / validation split.

    builder = tfds_cine.builder(manual_dir="/data/ACDC", target_mm=target_spacing(config),
                                data_dir="~/tensorflow_datasets")
    ds = builder.as_dataset(split="train")

The spacing is the builder config (one per spacing, e.g. `1.4mm`, and `native`
for target_mm=None, each volume's own grid): the prepared files depend on it,
so TFDS keeps each spacing in its own folder and never serves slices prepared
at another. The one predefined config is the base
config's spacing (jaxsr.configs.default), which `tfds build` and
`tfds.builder("cine_slices")` use.
"""

from __future__ import annotations

import collections
import pathlib

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from jaxsr.config import NATIVE, target_spacing
from jaxsr.configs import default
from jaxsr.data import datasets

tf.config.set_visible_devices([], "GPU")


class CineSlicesConfig(tfds.core.BuilderConfig):
    """The in-plane spacing the volumes are resampled to (None: none, each volume's own)."""

    def __init__(self, *, target_mm: float | None):
        if target_mm is None:
            super().__init__(name=NATIVE, description="slices at each volume's own in-plane spacing (not resampled)")
        else:
            super().__init__(name=f"{target_mm:g}mm", description=f"slices resampled to {target_mm:g} mm in-plane")
        self.target_mm = None if target_mm is None else float(target_mm)


class CineSlices(tfds.core.GeneratorBasedBuilder):
    """Cine MRI short-axis slices, preprocessed as in Sander et al. (SPIE MI 2021)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: percentile-scaled, in-plane resampled slices with patient/frame/slice index."}
    BUILDER_CONFIGS = [CineSlicesConfig(target_mm=target_spacing(default.get_config()))]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Point manual_dir at an ACDC copy (the folder holding training/ or database/training/, from "
        "https://www.creatis.insa-lyon.fr/Challenge/acdc/) or at any folder of 3D/4D .nii/.nii.gz volumes "
        "and DICOM series folders."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=__doc__,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Tensor(shape=(None, None, 1), dtype=np.float32, encoding=tfds.features.Encoding.ZLIB),
                "volume": tfds.features.Text(),
                "frame": np.int32,
                "slice": np.int32,
                "num_slices": np.int32,
                "slice_spacing_mm": np.float32,
            }),
            citation="Sander, de Vos, Isgum. Autoencoding low-resolution MRI for semantically smooth interpolation "
                     "of anisotropic MRI. SPIE Medical Imaging 2021. Bernard et al., IEEE TMI 2018 (ACDC).",
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        root = pathlib.Path(dl_manager.manual_dir)
        split = datasets.make_split(root)
        return {name: self._generate_examples(root, split[name]) for name in datasets.SPLITS if split[name]}

    def _generate_examples(self, root: pathlib.Path, relative_paths: list[str]):
        from jaxsr.data.preprocess import preprocess_volume
        from jaxsr.io.volumes import load_volume

        for rel in relative_paths:
            volume = load_volume(root / rel)
            data = preprocess_volume(volume, self.builder_config.target_mm)[0]
            if data.ndim == 3:
                data = data[..., None]
            for t in range(data.shape[3]):
                for z in range(data.shape[2]):
                    yield f"{rel}/{t}/{z}", {
                        "image": np.ascontiguousarray(data[:, :, z, t, None], np.float32),
                        "volume": rel,
                        "frame": t,
                        "slice": z,
                        "num_slices": data.shape[2],
                        "slice_spacing_mm": volume.slice_spacing_mm,
                    }


def builder(*, manual_dir, target_mm: float | None, data_dir=None) -> CineSlices:
    """The builder for slices at `target_mm` (None: native), prepared (built once, then read from `data_dir`)."""
    # TFDS refuses a new config object named like a predefined one: reuse that one.
    predefined = {c.target_mm: c for c in CineSlices.BUILDER_CONFIGS}
    target_mm = None if target_mm is None else float(target_mm)
    config = predefined[target_mm] if target_mm in predefined else CineSlicesConfig(target_mm=target_mm)
    b = CineSlices(config=config, data_dir=data_dir)
    b.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
    return b


def load_stacks(b: tfds.core.DatasetBuilder, split: str) -> list[np.ndarray]:
    """The split's volumes as (X, Y, Z, T) stacks again, for the triplet pipeline."""
    slices: dict = collections.defaultdict(dict)
    for ex in tfds.as_numpy(b.as_dataset(split=split, shuffle_files=False)):
        slices[ex["volume"].decode()][(int(ex["frame"]), int(ex["slice"]))] = ex["image"][..., 0]
    stacks = []
    for rel in sorted(slices):
        got = slices[rel]
        t_max, z_max = (max(k[i] for k in got) + 1 for i in (0, 1))
        if len(got) != t_max * z_max:
            raise ValueError(f"{rel}: {len(got)} slices stored, expected {t_max} frames x {z_max} slices")
        stacks.append(np.stack([np.stack([got[(t, z)] for z in range(z_max)], -1) for t in range(t_max)], -1))
    return stacks
