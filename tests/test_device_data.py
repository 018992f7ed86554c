"""The on-device sampler: rotated crops of real slices with the numpy sampler's choices, a pure function of (seed, step) on any mesh."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxsr import parallel
from jaxsr.train import device_data
from tests.patch_trace import assert_rotated_crops_everywhere, augment_config, check_triplet, coded_stacks, locate


def draw(stacks, cfg, *, seed: int, steps, batch_size: int = 8, triplets: bool = False, devices=None) -> list[dict]:
    """Batches `steps` of the jitted sampler, the batch laid out over a mesh of `devices` (default: all 8)."""
    mesh = parallel.make_mesh(devices)
    table = device_data.put(stacks, int(cfg.crop_size), mesh)
    sample = jax.jit(device_data.sampler(cfg, batch_size=batch_size, seed=seed, triplets=triplets,
                                         sharding=NamedSharding(mesh, P("data"))))
    return [jax.device_get(sample(table, s)) for s in steps]


def test_each_patch_is_a_random_crop_and_rot90_of_a_real_slice():
    stacks = coded_stacks()
    # 80 draws with replacement from 30 slices reach ~28 of them (the check asks for > 20).
    batches = draw(stacks, augment_config(intensity_aug=False), seed=3, steps=range(10))
    assert_rotated_crops_everywhere([img[..., 0] for b in batches for img in b["image"]], stacks)


def test_triplets_are_consecutive_slices_of_one_frame_and_image_is_the_middle():
    stacks = coded_stacks()
    (b,) = draw(stacks, augment_config(intensity_aug=False), seed=5, steps=[0], batch_size=16, triplets=True)
    assert b["triplet"].shape == (16, 24, 24, 3) and b["image"].shape == (16, 24, 24, 1)
    np.testing.assert_array_equal(b["image"][..., 0], b["triplet"][..., 1])
    starts = {check_triplet(trip, stacks)[2] for trip in b["triplet"]}
    assert starts <= {0, 1, 2}  # a triplet starts at most at Z - 3


def test_intensity_change_is_one_gamma_per_image_within_range():
    stacks = coded_stacks()
    (aug,) = draw(stacks, augment_config(rot90=False, gamma_range=(0.5, 2.0)), seed=1, steps=[0])
    (ref,) = draw(stacks, augment_config(rot90=False, intensity_aug=False), seed=1, steps=[0])  # the same crops
    gammas = np.log(aug["image"]).reshape(8, -1) / np.log(ref["image"]).reshape(8, -1)
    assert np.allclose(gammas, gammas[:, :1], rtol=1e-3)
    g = gammas[:, 0]
    assert np.all((g >= 0.5 - 1e-4) & (g <= 2.0 + 1e-4)) and np.ptp(g) > 0.2


def test_small_slices_are_zero_padded_centred_as_the_numpy_sampler_does():
    stack = np.full((10, 12, 3, 2), 0.5, np.float32)
    (b,) = draw([stack], augment_config(rot90=False, intensity_aug=False), seed=0, steps=[0])
    expected = np.zeros((24, 24), np.float32)
    expected[7:17, 6:18] = 0.5  # numpy's np.pad puts (24 - 10) // 2 rows and (24 - 12) // 2 columns before
    for img in b["image"][..., 0]:
        np.testing.assert_array_equal(img, expected)


def test_stack_then_frame_then_slice_are_drawn_uniformly():
    # Stack 0 has 1 frame, stack 1 has 6: drawing the stack first gives each half the examples
    # (drawing uniformly over all slices would give stack 0 a seventh).
    rng = np.random.default_rng(0)
    stacks = [rng.random((30, 30, 4, 1), dtype=np.float32), rng.random((30, 30, 4, 6), dtype=np.float32)]
    batches = draw(stacks, augment_config(rot90=False, intensity_aug=False), seed=2, steps=range(4), batch_size=64)
    found = [locate(img[..., 0], stacks) for b in batches for img in b["image"]]
    share = np.mean([f[0] == 0 for f in found])
    assert 0.4 < share < 0.6, share  # 256 draws: 0.5 +- 0.031 (1 sd)
    assert {f[1] for f in found if f[0] == 1} == set(range(6)) and {f[2] for f in found} == set(range(4))


def test_same_seed_same_batches_other_seed_others_on_any_mesh():
    stacks = coded_stacks()
    cfg = augment_config()
    first = draw(stacks, cfg, seed=7, steps=range(3), triplets=True)
    one_device = draw(stacks, cfg, seed=7, steps=[2, 1, 0], triplets=True, devices=jax.devices()[:1])[::-1]
    other = draw(stacks, cfg, seed=8, steps=[0], triplets=True)
    for a, b in zip(first, one_device):
        np.testing.assert_array_equal(a["triplet"], b["triplet"])
    assert not np.array_equal(first[0]["triplet"], first[1]["triplet"])
    assert not np.array_equal(first[0]["triplet"], other[0]["triplet"])
