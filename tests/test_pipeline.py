"""The tf.data pipeline: shapes, augmentations really applied, determinism, resumption, host shards; the TFDS builder."""

from __future__ import annotations

import itertools
import pathlib

import numpy as np
import pytest

from jaxsr.data import pipeline
from tests.patch_trace import H, assert_rotated_crops_everywhere, augment_config, check_triplet, coded_stacks, locate


def _take(ds, n):
    return list(itertools.islice(pipeline.numpy_batches(ds), n))


def test_batches_have_the_right_shapes_dtypes_and_range():
    stacks = coded_stacks()
    for triplets in (False, True):
        (b,) = _take(pipeline.make_dataset(stacks, augment_config(), batch_size=6, seed=0, triplets=triplets), 1)
        assert set(b) == ({"image", "triplet"} if triplets else {"image"})
        assert b["image"].shape == (6, 24, 24, 1) and b["image"].dtype == np.float32
        assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
        if triplets:
            assert b["triplet"].shape == (6, 24, 24, 3)
            np.testing.assert_array_equal(b["image"][..., 0], b["triplet"][..., 1])


def test_each_patch_is_a_random_crop_and_rot90_of_a_real_slice():
    stacks = coded_stacks()
    batches = _take(pipeline.make_dataset(stacks, augment_config(intensity_aug=False), batch_size=8, seed=3), 5)
    assert_rotated_crops_everywhere([img[..., 0] for b in batches for img in b["image"]], stacks)


def test_triplet_channels_are_consecutive_slices_of_one_frame():
    stacks = coded_stacks()
    (b,) = _take(pipeline.make_dataset(stacks, augment_config(intensity_aug=False), batch_size=8, seed=5, triplets=True), 1)
    for trip in b["triplet"]:
        check_triplet(trip, stacks)


def test_intensity_change_is_a_gamma_within_range():
    stacks = coded_stacks()
    ds = pipeline.make_dataset(stacks, augment_config(rot90=False, gamma_range=(0.5, 2.0)), batch_size=8, seed=1)
    plain = pipeline.make_dataset(stacks, augment_config(rot90=False, intensity_aug=False), batch_size=8, seed=1)
    (aug,), (ref,) = _take(ds, 1), _take(plain, 1)  # same keys, so the same crops
    gammas = np.log(aug["image"]).reshape(8, -1) / np.log(ref["image"]).reshape(8, -1)
    assert np.allclose(gammas, gammas[:, :1], rtol=1e-3)  # one exponent per image
    g = gammas[:, 0]
    assert np.all((g >= 0.5 - 1e-4) & (g <= 2.0 + 1e-4)) and np.ptp(g) > 0.2


def test_small_images_are_zero_padded_not_stretched():
    stack = np.full((10, 12, 3, 2), 0.5, np.float32)
    (b,) = _take(pipeline.make_dataset([stack], augment_config(intensity_aug=False), batch_size=4, seed=0), 1)
    img = b["image"][..., 0]
    assert np.all(np.isin(img, [0.0, 0.5])) and np.all((img == 0.5).sum(axis=(1, 2)) == 120)


def test_same_seed_same_batches_other_seed_other_batches_and_exact_resume():
    stacks = coded_stacks()
    make = lambda seed, start=0: pipeline.make_dataset(stacks, augment_config(), batch_size=4, seed=seed, triplets=True, start_step=start)
    first, again, other = _take(make(7), 12), _take(make(7), 12), _take(make(8), 1)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["triplet"], b["triplet"])
    assert not np.array_equal(first[0]["triplet"], other[0]["triplet"])
    # 12 batches span more than one epoch (2 stacks x 3 frames x 3 triplet starts = 18 elements, 4 batches an epoch).
    resumed = _take(make(7, start=9), 3)
    for a, b in zip(first[9:], resumed):
        np.testing.assert_array_equal(a["triplet"], b["triplet"])


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_host_shards_are_disjoint_and_cover_the_epoch(count):
    n = 36
    shards = [pipeline.host_order(n, seed=4, epoch=2, process_index=p, process_count=count) for p in range(count)]
    assert len({len(s) for s in shards}) == 1
    joined = np.concatenate(shards)
    assert len(set(joined.tolist())) == joined.size == n  # 36 divides by 1..4: nothing dropped


def test_host_datasets_partition_the_elements():
    stacks = coded_stacks()  # 2 x 3 frames x 5 slices = 30 slices
    seen = []
    for p in range(3):
        ds = pipeline.make_dataset(stacks, augment_config(crop_size=H), batch_size=5, seed=2, process_index=p, process_count=3,
                                   augment=False, repeat=False)
        for b in pipeline.numpy_batches(ds):
            for img in b["image"][..., 0]:
                i, t, z, *_ = locate(img[:, 2:-2], stacks)  # 36 wide, centre-padded to 40
                seen.append((i, t, z))
    assert len(seen) == len(set(seen)) == 30


def test_bad_arguments_are_clear():
    stacks = coded_stacks()
    with pytest.raises(ValueError, match="process_index 3 not in"):
        pipeline.make_dataset(stacks, augment_config(), batch_size=2, seed=0, process_index=3, process_count=2)
    with pytest.raises(ValueError, match="fewer than one batch"):
        pipeline.make_dataset(stacks, augment_config(), batch_size=64, seed=0)
    with pytest.raises(ValueError, match="too thin for triplets"):
        pipeline.make_dataset([np.zeros((8, 8, 2, 1), np.float32)], augment_config(), batch_size=1, seed=0, triplets=True)


def test_tfds_builder_round_trips_the_preprocessed_stacks(tmp_path):
    from jaxsr.data import datasets, phantom, tfds_cine

    root = tmp_path / "phantom"
    phantom.write_phantom_dataset(root, 6, 3, spec=phantom.PhantomSpec(frames=(2, 3), matrix=(48, 52)))
    builder = tfds_cine.builder(manual_dir=root, target_mm=1.4, data_dir=tmp_path / "tfds")
    split = datasets.make_split(root)
    for name in datasets.SPLITS:
        want = datasets.load_stacks(root, name, 1.4)
        got = tfds_cine.load_stacks(builder, name) if want else []
        assert len(got) == len(want)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
        n_slices = sum(s.shape[2] * s.shape[3] for s in want)
        assert builder.info.splits[name].num_examples == n_slices if want else name not in builder.info.splits
    ex = next(iter(builder.as_dataset(split="train").take(1)))
    assert ex["volume"].numpy().decode() in split["train"]
    assert 0 <= int(ex["slice"]) < int(ex["num_slices"])
    # The rebuilt stacks feed the triplet pipeline.
    (b,) = _take(pipeline.make_dataset(tfds_cine.load_stacks(builder, "train"), augment_config(), batch_size=2, seed=0, triplets=True), 1)
    assert b["triplet"].shape == (2, 24, 24, 3)


def test_tfds_keeps_each_spacing_in_its_own_folder(tmp_path):
    from jaxsr.configs import default
    from jaxsr.data import tfds_cine

    base_mm = default.get_config().data.target_spacing_mm
    (predefined,) = tfds_cine.CineSlices.BUILDER_CONFIGS
    assert predefined.target_mm == base_mm
    at_base = tfds_cine.CineSlices(config=predefined, data_dir=tmp_path)
    other = tfds_cine.CineSlices(config=tfds_cine.CineSlicesConfig(target_mm=2.0), data_dir=tmp_path)
    assert at_base.builder_config.target_mm == base_mm and other.builder_config.target_mm == 2.0
    # <data_dir>/cine_slices/<config name>/<version>: one folder per spacing.
    assert pathlib.Path(at_base.data_dir).parts[-2] == f"{base_mm:g}mm"
    assert pathlib.Path(other.data_dir).parts[-2] == "2mm"
