"""Winograd convolutions (jaxsr.models.winograd) against lax.conv_general_dilated, and conv_impl=auto's choice cache.

Tolerance (Higham, Accuracy and Stability of Numerical Algorithms, Sec. 3.1; the Winograd case as in
Barabasz et al. 2020): every stage of the algorithm is a sum of products, and a computed sum of n
terms lies within gamma_n * (the same sum of absolute values) of the exact one, gamma_n = n*u/(1-n*u),
in any order and with or without FMA. Carried through the stages, the computed result lies within
gamma_k * P of the exact one, where P is the same algorithm run on |x|, |w| with |B^T|, |G|, |A^T|
(in float64) and k counts the roundings along any path:

  forward: input transform 2*alpha (rows, then columns, <= alpha terms each), kernel transform 6 (two
  stages of 3 taps), G's constants rounded to the working precision 2 (G twice; B^T and A^T are dyadic
  here, exact), the product 1, the sum over cin channels cin, the output transform 2*alpha:
      k = 4*alpha + cin + 9;
  weight gradient: input transform 2*alpha, dM = A dY A^T 2*m, the product 1, the sum over T tiles T,
  G^T dU G 2*alpha, G's constants 2:   k = 4*alpha + 2*m + T + 3;
  input gradient: the forward's k with cin := cout (the forward conv of dy with the transposed kernel).

The reference is lax in float64, whose own error gamma_{9 cin + 1}(u64) * conv(|x|, |w|) is added.
bfloat16: the transforms run in float32 (the bound above with u = 2**-24), then V and U are rounded to
bfloat16 for the matmul (2 roundings of u_b = 2**-8) and the output once more: factor
(1 + u_b)**3 * (1 + gamma_k) - 1. These hold on any CPU; a wrong tap is off by O(|y|) >> the bound.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxsr.config import load_config, validate
from jaxsr.errors import ConfigError
from jaxsr.models import conv_choice, conv_impls, winograd
from jaxsr.models.autoencoder import AutoEncoder

U32, U64, UB = 2.0**-24, 2.0**-53, 2.0**-8
VARIANTS = {"winograd2": winograd.transforms(2), "winograd4": winograd.transforms(4),
            "winograd4 (0, ±1, ±2, ∞)": winograd.transforms(4, winograd.LAVIN_GRAY_POINTS_4)}
SHAPES = [((2, 8, 8, 3), 5), ((3, 7, 13, 4), 1), ((1, 1, 3, 1), 2)]  # odd sizes, a 1-channel end, a 1-row image


def gamma(n: int, u: float) -> float:
    return n * u / (1 - n * u)


def _abs(mats):
    return tuple(np.abs(m) for m in mats)


def _case(shape, cout, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape), rng.standard_normal((3, 3, shape[-1], cout)) / np.sqrt(9 * shape[-1]),
            rng.standard_normal(shape[:3] + (cout,)))


@jax.jit
def _lax_all(x, w, dy):
    y, vjp = jax.vjp(winograd.lax_conv, x, w)
    return (y, *vjp(dy))


def direct_term_counts(x_shape, w_shape) -> tuple[int, int, int]:
    """k of the direct conv's bound gamma_k, per output entry: one more than the terms summed (fwd, dx, dw)."""
    n, h, wd = x_shape[:3]
    cin, cout = w_shape[2:]
    return 9 * cin + 1, 9 * cout + 1, n * h * wd + 1


def direct_float32_bounds(x_shape, w_shape, own):
    """gamma_k(u32) · P for the direct conv's three directions, from lax's float64 bounds gamma_k(u64) · P
    (`_reference`'s `own`, same k)."""
    return [o * (gamma(k, U32) / gamma(k, U64)) for k, o in zip(direct_term_counts(x_shape, w_shape), own)]


def _reference(x, w, dy):
    """lax's forward, input gradient and weight gradient in float64, and its own error bounds."""
    with jax.enable_x64():
        x, w, dy = (jnp.asarray(a, jnp.float64) for a in (x, w, dy))
        exact = [np.asarray(a) for a in _lax_all(x, w, dy)]
        on_abs = [np.asarray(a) for a in _lax_all(jnp.abs(x), jnp.abs(w), jnp.abs(dy))]
    return exact, [gamma(k, U64) * a for k, a in zip(direct_term_counts(x.shape, w.shape), on_abs)]


def _k_and_p(x, w, dy, variant):
    """(k, P) for forward, input gradient and weight gradient (module docstring); P in float64."""
    mats = VARIANTS[variant]
    alpha, m = mats[0].shape[0], mats[2].shape[0]
    n, h, wd, cin = x.shape
    cout = w.shape[-1]
    tiles = n * -(-h // m) * -(-wd // m)
    with jax.enable_x64():
        ax, aw, ady = (jnp.abs(jnp.asarray(a, jnp.float64)) for a in (x, w, dy))
        p_fwd, p_dx, p_dw = (np.asarray(a) for a in _all_directions(variant, True)(ax, aw, ady))
    return [(4 * alpha + cin + 9, p_fwd), (4 * alpha + cout + 9, p_dx), (4 * alpha + 2 * m + tiles + 3, p_dw)]


def _bounds(x, w, dy, variant, u):
    return [gamma(k, u) * p for k, p in _k_and_p(x, w, dy, variant)]


@functools.lru_cache(maxsize=None)
def _all_directions(variant: str, absolute: bool = False):
    """One jitted function (compiled once per shape): forward, input gradient and weight gradient by `variant`."""
    mats = _abs(VARIANTS[variant]) if absolute else VARIANTS[variant]

    def run(x, w, dy):
        return (winograd.winograd_conv(x, w, mats), winograd.winograd_conv(dy, winograd.transposed_kernel(w), mats),
                winograd.winograd_weight_gradient(x, dy, mats))
    return jax.jit(run)


def _winograd_all(x, w, dy, variant, dtype):
    return _all_directions(variant)(*(jnp.asarray(a, dtype) for a in (x, w, dy)))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("shape,cout", SHAPES)
def test_float32_within_the_derived_bound_of_float64_lax(variant, shape, cout):
    x, w, dy = _case(shape, cout)
    x32, w32, dy32 = (a.astype(np.float32).astype(np.float64) for a in (x, w, dy))  # one set of inputs for both
    ref, own = _reference(x32, w32, dy32)
    bounds = _bounds(x32, w32, dy32, variant, U32)
    for name, got, r, b, o in zip(("fwd", "dx", "dw"), _winograd_all(x32, w32, dy32, variant, jnp.float32), ref, bounds, own):
        assert got.shape == r.shape and got.dtype == jnp.float32, name
        assert np.all(np.abs(np.asarray(got, np.float64) - r) <= b + o), (name, np.max(np.abs(got - r) - b - o))


@pytest.mark.parametrize("impl", sorted(winograd.IMPLS))
def test_float64_matches_lax_to_rounding_and_the_custom_vjp_is_the_gradient(impl):
    """In float64 the bound is ~1e-14 relative: the algorithm itself (transforms, tiles, crop, vjp) is exact."""
    shape, cout = (2, 7, 10, 3), 4
    x, w, dy = _case(shape, cout, seed=1)
    ref, own = _reference(x, w, dy)
    bounds = _bounds(x, w, dy, impl, U64)
    @jax.jit
    def through_custom_vjp(x, w, dy):
        y, vjp = jax.vjp(lambda a, b: conv_impls.conv3x3((impl, impl, impl), a, b), x, w)
        return (y, *vjp(dy))

    with jax.enable_x64():
        got = through_custom_vjp(*(jnp.asarray(a) for a in (x, w, dy)))
    for name, g, r, b, o in zip(("fwd", "dx", "dw"), got, ref, bounds, own):
        assert g.dtype == jnp.float64 and np.all(np.abs(np.asarray(g) - r) <= b + o), name


@pytest.mark.parametrize("impl", sorted(winograd.IMPLS))
def test_bfloat16_within_its_bound(impl):
    shape, cout = (2, 8, 6, 4), 3
    x, w, dy = (np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64) for a in _case(shape, cout, seed=2))
    ref, own = _reference(x, w, dy)
    bounds = [((1 + UB) ** 3 * (1 + gamma(k, U32)) - 1) * p for k, p in _k_and_p(x, w, dy, impl)]
    for name, got, r, b, o in zip(("fwd", "dx", "dw"), _winograd_all(x, w, dy, impl, jnp.bfloat16), ref, bounds, own):
        assert got.dtype == jnp.bfloat16, name
        assert np.all(np.abs(np.asarray(got, np.float64) - r) <= b + o), name


def test_the_bound_catches_a_swapped_tap():
    """Two taps of the kernel swapped, or two entries of the weight gradient: rejected by the same bounds."""
    shape, cout = (2, 8, 8, 3), 5
    x, w, dy = (a.astype(np.float32).astype(np.float64) for a in _case(shape, cout))
    ref, own = _reference(x, w, dy)
    bounds = _bounds(x, w, dy, "winograd4", U32)
    swapped = w.copy()
    swapped[0, 0], swapped[0, 1] = w[0, 1], w[0, 0]
    y_wrong = np.asarray(_winograd_all(x, swapped, dy, "winograd4", jnp.float32)[0], np.float64)
    assert not np.all(np.abs(y_wrong - ref[0]) <= bounds[0] + own[0])
    dw = np.asarray(_winograd_all(x, w, dy, "winograd4", jnp.float32)[2], np.float64)
    dw[0, 0], dw[0, 1] = dw[0, 1].copy(), dw[0, 0].copy()
    assert not np.all(np.abs(dw - ref[2]) <= bounds[2] + own[2])


def test_the_transforms_are_the_published_f2_matrices():
    """Lavin & Gray's F(2x2,3x3), up to the sign of the first row pair that the Toom-Cook solve leaves free."""
    bt, g, at = winograd.transforms(2)
    np.testing.assert_array_equal(at, [[1, 1, 1, 0], [0, 1, -1, 1]])
    np.testing.assert_array_equal(g[1:], [[.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
    np.testing.assert_array_equal(bt[1:], [[0, 1, 1, 0], [0, -1, 1, 0], [0, -1, 0, 1]])
    assert abs(g[0, 0]) == 1 and np.array_equal(bt[0] * g[0, 0], [1, 0, -1, 0])


# -- conv_impl=auto: the choice cache ----------------------------------------------------------------------------------
BIG = (8, 64, 64, 32)  # 2*8*64*64*9*32*32 = 6e8 FLOPs: above MIN_PROBE_FLOPS, so auto times it


@pytest.fixture
def fake_timer(tmp_path, monkeypatch):
    """A cache file in tmp_path, an empty process memo, and probe_seconds replaced by a recorder (no real timing)."""
    monkeypatch.setenv(conv_choice.ENV_VAR, str(tmp_path / "choice.json"))
    monkeypatch.setattr(conv_choice, "_memo", {})
    calls = []
    fastest = {"fwd": "winograd4", "dw": "winograd2"}

    def probe(direction, impl, x_shape, cout, dtype):
        calls.append((direction, impl, tuple(x_shape), cout))
        return 1.0 if impl == fastest[direction] else 2.0

    monkeypatch.setattr(conv_choice, "probe_seconds", probe)
    return calls


def test_auto_times_once_persists_and_reuses_without_timing(fake_timer, tmp_path, monkeypatch):
    impls = conv_choice.resolve("auto", BIG, 64, jnp.float32)
    # fwd of 32->64, fwd of the transposed problem 64->32 (the input gradient) and dW, each by every impl
    assert impls == ("winograd4", "winograd4", "winograd2")
    assert len(fake_timer) == 3 * len(conv_choice.candidates(jnp.float32))
    table = json.loads((tmp_path / "choice.json").read_text())
    assert sorted(e["impl"] for e in table.values()) == ["winograd2", "winograd4", "winograd4"]
    assert conv_choice.resolve("auto", BIG, 64, jnp.float32) == impls and len(fake_timer) == 9  # this process's memo
    monkeypatch.setattr(conv_choice, "_memo", {})  # as a new process: the file, not the timer
    assert conv_choice.resolve("auto", BIG, 64, jnp.float32) == impls and len(fake_timer) == 9


def test_auto_keeps_lax_without_timing_for_small_convs_and_float64(fake_timer):
    assert conv_choice.resolve("auto", (8, 32, 32, 4), 4, jnp.float32) == ("lax",) * 3
    assert conv_choice.resolve("auto", BIG, 64, jnp.float64) == ("lax",) * 3
    assert conv_choice.resolve("winograd2", BIG, 64, jnp.float32) == ("winograd2",) * 3
    assert fake_timer == []


def test_auto_is_lax_in_a_multi_process_run(fake_timer, monkeypatch):
    """Hosts timing on their own could trace different programs for one SPMD step."""
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    assert conv_choice.resolve("auto", BIG, 64, jnp.float32) == ("lax",) * 3 and fake_timer == []


def test_a_choice_already_on_file_wins_over_a_new_measurement(fake_timer, tmp_path):
    """Two processes that timed the same problem at once trace the same program: the first stored wins."""
    path = tmp_path / "choice.json"
    key = conv_choice.cache_key("fwd", BIG, 64, jnp.float32)
    path.write_text(json.dumps({key: {"impl": "lax", "seconds": {}}}))
    assert conv_choice._store(path, key, {"impl": "winograd4", "seconds": {}}, conv_choice.IMPLS) == "lax"
    assert json.loads(path.read_text())[key]["impl"] == "lax"


def test_a_damaged_cache_file_is_measured_again(fake_timer, tmp_path):
    (tmp_path / "choice.json").write_text("{not json")
    assert conv_choice.resolve("auto", BIG, 64, jnp.float32)[0] == "winograd4"
    assert conv_choice.IMPLS[0] in json.loads((tmp_path / "choice.json").read_text())[
        conv_choice.cache_key("fwd", BIG, 64, jnp.float32)]["seconds"]


_WRITER = """
import sys
from jaxsr.models import conv_choice
path, who = conv_choice.pathlib.Path(sys.argv[1]), sys.argv[2]
for i in range(60):
    conv_choice._store(path, f"{who}/{i}", {"impl": "lax", "seconds": {}}, conv_choice.IMPLS)
    conv_choice._store(path, f"shared/{i}", {"impl": "winograd2" if who == "a" else "winograd4", "seconds": {}}, conv_choice.IMPLS)
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    path = tmp_path / "choice.json"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), who], env=env) for who in "ab"]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    table = json.loads(path.read_text())
    assert all(f"{who}/{i}" in table for who in "ab" for i in range(60))
    assert all(table[f"shared/{i}"]["impl"] in ("winograd2", "winograd4") for i in range(60))
    assert not list(tmp_path.glob("*.tmp"))


def test_probe_runs_while_a_model_is_traced(tmp_path, monkeypatch):
    """The real timer, called from inside jit tracing, times concrete calls (not staged into the trace)."""
    monkeypatch.setenv(conv_choice.ENV_VAR, str(tmp_path / "choice.json"))
    monkeypatch.setattr(conv_choice, "_memo", {})
    monkeypatch.setattr(conv_choice, "MIN_PROBE_FLOPS", 0)
    x, w = jnp.ones((1, 8, 8, 2)), jnp.ones((3, 3, 2, 2))
    y = jax.jit(lambda a, b: conv_choice.conv("auto", a, b))(x, w)
    np.testing.assert_allclose(y, winograd.lax_conv(x, w), rtol=1e-5)
    table = json.loads((tmp_path / "choice.json").read_text())
    assert [k.split("/")[3] for k in table] == ["fwd"]  # inference times the forward only
    jax.jit(jax.grad(lambda a, b: conv_choice.conv("auto", a, b).sum(), argnums=(0, 1)))(x, w)
    table = json.loads((tmp_path / "choice.json").read_text())
    assert sorted(k.split("/")[3] for k in table) == ["dw", "fwd"]  # the input gradient's problem is that same forward
    seconds = [e["seconds"] for e in table.values()]
    assert all(set(s) == set(conv_choice.candidates(jnp.float32)) and min(s.values()) > 0 for s in seconds)


# -- the model and its config -----------------------------------------------------------------------------------------
def test_unknown_conv_impl_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"^--config.model.conv_impl='fft': expected one of auto, lax, winograd2, winograd4, native$"):
        validate(load_config("tiny", ["--config.model.conv_impl=fft"]))
    with pytest.raises(ValueError, match=r"^conv_impl='fft': expected one of auto, lax, winograd2, winograd4, native$"):
        AutoEncoder(load_config("tiny", ["--config.model.conv_impl=fft"]).model, rngs=nnx.Rngs(0))


def test_the_model_routes_to_winograd_with_the_same_parameters():
    """Same nnx.Conv state (a lax-era checkpoint loads unchanged); Winograd's dots in place of XLA's convolutions."""
    def abstract(impl):  # shapes only: nothing initialised or run
        model = nnx.eval_shape(lambda: AutoEncoder(load_config("tiny", [f"--config.model.conv_impl={impl}"]).model,
                                                   rngs=nnx.Rngs(0)))
        model.eval()
        return nnx.split(model)

    (lax_def, lax_state), (wino_def, wino_state) = abstract("lax"), abstract("winograd4")
    shapes = lambda state: jax.tree.map(lambda a: (a.shape, a.dtype), nnx.to_pure_dict(state))  # noqa: E731
    assert shapes(wino_state) == shapes(lax_state)
    x = jax.ShapeDtypeStruct((2, 32, 32, 1), jnp.float32)

    def program(graphdef, state, grad=False):
        f = lambda s, a: nnx.merge(graphdef, s)(a).sum()  # noqa: E731
        return str(jax.make_jaxpr(jax.grad(f, argnums=(0, 1)) if grad else f)(state, x))

    assert "conv_general_dilated" in program(lax_def, lax_state)
    assert "conv_general_dilated" not in program(wino_def, lax_state)  # the lax model's state, as from its checkpoint
    assert "conv_general_dilated" not in program(wino_def, lax_state, grad=True)
