"""data.target_spacing_mm="native": no in-plane resampling on either preprocessing path.

Native keeps the source's in-plane grid, so the preprocessed grid's affine and
matrix are the source's exactly, and the only change to an intensity is the
percentile scaling and its inverse (float32 rounding, a few u = 2^-24 of the
values' magnitude). Any resampling of these noisy volumes, as the 1.4 mm path
does (anisotropic 1.4 x 1.6 mm voxels), moves intensities by a sizeable part
of the noise: thousands of times the tolerance.
"""

from __future__ import annotations

import pathlib

import ml_collections
import numpy as np
import pytest

from jaxsr import config as config_lib
from jaxsr import interpolate, upsample
from jaxsr.data import preprocess
from jaxsr.errors import ConfigError
from jaxsr.io import nifti
from tests.test_interpolate import LinearCodec, tiny_config
from tests.test_preprocess_device import U, resample_bound, smooth_volume

SHAPE, SPACING = (30, 26, 4, 2), (1.4, 1.6, 8.0)  # anisotropic in-plane voxels, oblique affine, 4D


def native_config() -> ml_collections.ConfigDict:
    settings = tiny_config().to_dict()
    settings["data"]["target_spacing_mm"] = config_lib.NATIVE
    return ml_collections.ConfigDict(settings)


def unclamped(volume, stack):
    """Voxels the percentile scaling did not clamp: those the restore can give back."""
    return (stack > 0) & (stack < 1) if volume.is_4d else (stack[..., 0] > 0) & (stack[..., 0] < 1)


def rounding_tol(volume, intensity) -> float:
    # (x - lo) / span, then · span + lo: four float32 roundings of values up to max|x| + |lo|.
    return 4 * U * (float(np.abs(volume.data).max()) + abs(intensity.lo_value))


@pytest.fixture
def volume(rng):
    return smooth_volume(rng, SHAPE, SPACING)


def test_native_preprocessing_keeps_the_source_grid(volume):
    stack, prep = preprocess.preprocess_volume(volume, None)
    assert stack.shape == SHAPE and prep.shape_xy == prep.source_shape_xy == SHAPE[:2]
    np.testing.assert_array_equal(prep.affine, volume.affine)
    # No resampling: exactly the percentile scaling of the source.
    np.testing.assert_array_equal(stack, preprocess.percentile_normalise(volume.data)[0])
    back = prep.restore(stack)
    keep = unclamped(volume, stack)
    err = np.abs(back - volume.data)[keep].max()
    assert err <= rounding_tol(volume, prep.intensity), err
    # The 1.4 mm path resamples y (1.6 -> 1.4 mm) and back: what native avoids.
    stack_mm, prep_mm = preprocess.preprocess_volume(volume, 1.4)
    assert stack_mm.shape[:2] == (30, 30)
    assert np.abs(prep_mm.restore(stack_mm) - volume.data)[keep].max() > 1000 * err


@pytest.mark.parametrize("path", ["scipy", "device"])
def test_native_upsampling_keeps_geometry_and_acquired_intensities(volume, path):
    """Identity model (encode 2x, decode x/2): acquired slices come back as the input, through the model."""
    interpolator = interpolate.interpolator_for(LinearCodec(), native_config(), batch_size=16)
    out = upsample.upsample_volume(interpolator, native_config(), volume, factor=2, replace_originals=True,
                                      preprocess=path)
    assert out.data.shape == (30, 26, 7, 2)
    np.testing.assert_array_equal(out.affine[:, :2], volume.affine[:, :2])  # in-plane columns
    np.testing.assert_array_equal(out.affine[:, 3], volume.affine[:, 3])  # slice 0 where it was
    np.testing.assert_allclose(out.affine[:3, 2], volume.affine[:3, 2] / 2, rtol=0, atol=1e-12)
    stack, prep = preprocess.preprocess_volume(volume, None)
    keep = unclamped(volume, stack)
    tol = rounding_tol(volume, prep.intensity)
    if path == "device":
        # Its percentiles are float32 (numpy's float64): the scale moves by the resampling bound with no resampling.
        tol += 4 * resample_bound(SHAPE[:2], SHAPE[:2], float(np.abs(volume.data).max()))
    err = np.abs(out.data[:, :, ::2] - volume.data)[keep].max()
    assert err <= tol, (err, tol)


def test_native_and_bad_spacings_from_the_command_line(tmp_path):
    config = config_lib.load_config("tiny", ["--config.data.target_spacing_mm=native"])
    config_lib.validate(config)
    assert config_lib.target_spacing(config) is None
    assert config_lib.target_spacing(config_lib.from_json(config_lib.to_json(config))) is None
    again = config_lib.load_config("tiny", ["--config.data.target_spacing_mm=native", "--config.data.target_spacing_mm=1.25"])
    assert config_lib.target_spacing(again) == 1.25
    with pytest.raises(ConfigError, match=r"^--config.data.target_spacing_mm=foo: expected a number or native$"):
        config_lib.load_config("tiny", ["--config.data.target_spacing_mm=foo"])
    for bad in ("-1", "0"):
        config = config_lib.load_config("tiny", [f"--config.data.target_spacing_mm={bad}"])
        with pytest.raises(ConfigError, match=rf"^--config.data.target_spacing_mm={bad}.0: expected a positive number of mm or native$"):
            config_lib.validate(config)
    # A config file may say it too.
    path = tmp_path / "mine.py"
    path.write_text("from jaxsr.configs import default\n\ndef get_config():\n    c = default.get_config()\n"
                    "    c.data.target_spacing_mm = 'native'\n    return c\n")
    config_lib.validate(config_lib.load_config(path))


def test_labels_say_native_and_the_spacing():
    assert preprocess.inplane_label(1.4) == "1.4 mm"
    assert preprocess.inplane_label(None, (1.0, 1.25)) == "native (1 x 1.25 mm)"
    assert preprocess.inplane_label(None).startswith("native")


def test_tfds_keeps_native_apart_from_millimetres(tmp_path):
    """A cache prepared at 1.4 mm is never served for native: its own config, folder and slices."""
    from jaxsr.data import datasets, phantom, tfds_cine

    root = tmp_path / "phantom"
    phantom.write_phantom_dataset(root, 3, 1, spec=phantom.PhantomSpec(frames=(2, 2), matrix=(40, 44)))
    at_mm = tfds_cine.builder(manual_dir=root, target_mm=1.4, data_dir=tmp_path / "tfds")
    native = tfds_cine.builder(manual_dir=root, target_mm=None, data_dir=tmp_path / "tfds")
    assert native.builder_config.name == "native" and native.builder_config.target_mm is None
    assert pathlib.Path(native.data_dir).parts[-2] == "native" != pathlib.Path(at_mm.data_dir).parts[-2]
    want = datasets.load_stacks(root, "train", None)
    got = tfds_cine.load_stacks(native, "train")
    sources = [nifti.load(p) for p in datasets.volumes_for_split(root, "train")]
    assert [g.shape for g in got] == [w.shape for w in want] == [s.data.shape for s in sources]  # not resampled
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_native_evaluation_scores_on_the_source_grid(tmp_path):
    from jaxsr import evaluate
    from tests.test_bad_inputs import good_volume

    path = good_volume(tmp_path / "v.nii.gz")  # 40 x 36 x 6 x 3 at 1.5 mm in-plane
    metrics = {k: fn for k, fn in evaluate.default_metrics().items() if k != "vif"}  # VIF needs 41 x 41
    evaluation = evaluate.evaluate_volumes([path], evaluate.baseline_methods(), metrics,
                                           target_mm=None, crop_size=None, n_examples=0, through_plane_factor=2)
    assert evaluation.counts["volumes"] == 1 and evaluation.counts["slices_scored"] == 3 * 2  # slices 1 and 3, 3 frames
    example = evaluation.through_plane
    assert example.inplane_mm == 1.5 and example.acquired.shape == (36, 6)  # the source's y axis, not resampled
