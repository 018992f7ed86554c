"""Test-time self-ensembling (jaxsr.tta) and the recipe a checkpoint carries (config.inference).

- The 8 symmetries are distinct and each is undone by its inverse.
- A stand-in model that commutes with every rot90/flip gives the same slices
  with and without the ensemble (averaging 8 equal images: a few roundings).
- For a stand-in that does not commute, the ensemble equals an independent
  implementation: numpy turns the whole stack, the plain interpolator runs, numpy
  turns the result back, the 8 results are averaged; this also shows that the
  first check can fail.
- A checkpoint trained with inference.mix/tta gives them back to `upsample`
  unless --mix/--tta say otherwise, and the sidecar records what was used.
"""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsr import cli, tta
from jaxsr.interpolate import LatentInterpolator, load_interpolator
from jaxsr.models.autoencoder import AutoEncoder
from tests.test_upsample_cli import write_checkpoint, write_int16_volume

POSITIONS = np.array([0.0, 0.25, 0.5, 1.0, 1.5, 1.75, 2.0])
U = 2.0**-24


class Equivariant:
    """encode: 2x2 average pool and a per-pixel channel map; decode: nearest upsampling and its inverse map."""

    def encode(self, x):
        n, h, w, _ = x.shape
        pooled = x.reshape(n, h // 2, 2, w // 2, 2, 1).mean(axis=(2, 4))
        return jnp.concatenate([pooled, pooled**2], axis=-1)

    def decode(self, z):
        up = jnp.repeat(jnp.repeat(z, 2, axis=1), 2, axis=2)
        return (0.75 * up[..., :1] + 0.25 * jnp.sqrt(jnp.maximum(up[..., 1:], 0.0)))


class Oriented(Equivariant):
    """The same, plus a ramp along the first image axis and a one-pixel shift: no symmetry commutes with it."""

    def encode(self, x):
        ramp = jnp.linspace(0.5, 1.5, x.shape[1])[None, :, None, None]
        return super().encode(jnp.roll(x * ramp, 1, axis=2))


def _stack(shape=(8, 12, 3, 2), seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def _interpolate(model, stack):
    interpolator = LatentInterpolator(model, batch_size=8, size_multiple=4)
    return interpolator.interpolate_stack(stack, POSITIONS, keep_originals=False)


def test_symmetries_are_eight_distinct_invertible_maps():
    x = jnp.asarray(np.random.default_rng(1).random((2, 4, 6, 1)), jnp.float32)  # not square: rot90 swaps h and w
    images = [np.asarray(tta.apply(x, k, f)) for k, f in tta.SYMMETRIES]
    assert len(tta.SYMMETRIES) == 8
    for i, (k, f) in enumerate(tta.SYMMETRIES):
        np.testing.assert_array_equal(np.asarray(tta.invert(jnp.asarray(images[i]), k, f)), np.asarray(x))
        for j in range(i):
            assert images[i].shape != images[j].shape or not np.array_equal(images[i], images[j])


@pytest.mark.parametrize("shape", [(8, 12, 3, 2), (12, 12, 4, 1)])
def test_an_equivariant_model_is_its_own_ensemble(shape):
    stack = _stack(shape)
    plain = _interpolate(Equivariant(), stack)
    ensemble = _interpolate(tta.ensembled(Equivariant(), 8), stack)
    # The 8 images agree to the last bit or two (pooling sums in another order once turned);
    # their sum and the division by 8 add a rounding each: 16 u of the largest value is ample.
    np.testing.assert_allclose(ensemble, plain, rtol=0, atol=16 * U * float(np.abs(plain).max()))


def test_the_ensemble_is_the_mean_of_the_model_on_the_turned_stacks():
    stack = _stack()
    got = _interpolate(tta.ensembled(Oriented(), 8), stack)
    outputs = []
    for k, flip in tta.SYMMETRIES:
        turned = np.rot90(np.flip(stack, axis=1) if flip else stack, k, axes=(0, 1))
        out = np.rot90(_interpolate(Oriented(), np.ascontiguousarray(turned)), -k, axes=(0, 1))
        outputs.append(np.flip(out, axis=1) if flip else out)
    expected = np.mean(outputs, axis=0)
    plain = _interpolate(Oriented(), stack)
    scale = float(np.abs(expected).max())
    assert np.abs(plain - expected).max() > 1e-3 * scale  # the ensemble changes this model's output
    np.testing.assert_allclose(got, expected, rtol=0, atol=64 * U * scale)


def test_ensembled_refuses_other_counts():
    assert tta.ensembled(Equivariant(), 1).__class__ is Equivariant
    with pytest.raises(ValueError, match="tta must be one of"):
        tta.ensembled(Equivariant(), 4)


def test_the_recipe_is_read_back_from_the_checkpoint_and_flags_override_it(tmp_path, rng):
    workdir = write_checkpoint(tmp_path / "run", ["--config.inference.mix=residual", "--config.inference.tta=8"])
    interpolator, config = load_interpolator(workdir)
    assert (config.inference.mix, config.inference.tta) == ("residual", 8)
    assert isinstance(nnx.merge(interpolator._static, interpolator._state), tta.SymmetryEnsemble)
    plain, plain_config = load_interpolator(workdir, tta=1, mix="latent")
    assert (plain_config.inference.mix, plain_config.inference.tta) == ("latent", 1)
    assert isinstance(nnx.merge(plain._static, plain._state), AutoEncoder)
    assert load_interpolator(workdir)[1].inference.tta == 8  # an override changes no later load

    src = tmp_path / "in.nii.gz"
    write_int16_volume(src, rng)
    sidecars = {}
    for name, flags in (("recipe", []), ("override", ["--tta", "1", "--mix", "latent"])):
        out = tmp_path / f"{name}.nii.gz"
        assert cli.main(["upsample", str(src), str(out), "--checkpoint", str(workdir), "--factor", "2", *flags]) == 0
        sidecars[name] = json.loads((tmp_path / f"{name}.nii.gz.json").read_text())
    assert (sidecars["recipe"]["mix"], sidecars["recipe"]["tta"]) == ("residual", 8)
    assert (sidecars["override"]["mix"], sidecars["override"]["tta"]) == ("latent", 1)
    assert sidecars["recipe"]["config"]["inference"] == {"mix": "residual", "residual_weight": 1.0, "tta": 8,
                                                           "fallback": False}


def test_tta_flag_choices(capsys):
    parser = cli.build_parser()
    args = ["upsample", "a.nii", "b.nii", "--checkpoint", "c", "--factor", "2"]
    assert parser.parse_args(args).tta is None
    assert parser.parse_args(args + ["--tta", "8"]).tta == 8
    with pytest.raises(SystemExit):
        parser.parse_args(args + ["--tta", "4"])
    assert "--tta: invalid choice: 4" in capsys.readouterr().err
