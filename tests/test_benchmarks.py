"""benchmarks/: the suites' --quick JSON, FLOP counts against XLA, the peer-equivalence check, interleaved rounds."""

import json
import math
import os
import platform
import types

import numpy as np
import pytest

from benchmarks import common, equivalence, flops, impl_jax_twin, impl_torch, net_spec, peak, processes
from benchmarks import rounds, run, suite_train, table

ENV_FIELDS = ("date", "backend", "device_kind", "device_count", "local_device_count", "versions")
QUICK_CONFIG, QUICK_OVERRIDES = suite_train.QUICK_CONFIG


def _run_suite(tmp_path, suite, *extra):
    out = tmp_path / f"{suite}.json"
    result = run.run(["--suite", suite, "--quick", "--strict", "--out", str(out), *extra])
    on_disk = json.loads(out.read_text())
    assert on_disk["suites"].keys() == result["suites"].keys() == {suite}
    return on_disk


def _check_figures(result, suite):
    env = result["environment"]
    for field in ENV_FIELDS:
        assert field in env, field
    assert env["device_count"] >= 1 and env["versions"]["jax"] and env["versions"]["jaxsr"]
    block = result["suites"][suite]
    assert "skipped" not in block, block.get("traceback")
    figures = [f for f in block["figures"] if "skipped" not in f]
    assert figures
    for fig in figures:
        for key in ("median", "min", "max"):
            assert math.isfinite(fig[key]) and fig[key] > 0, (fig["name"], key, fig[key])
        assert fig["min"] <= fig["median"] <= fig["max"], fig
        assert fig["repeats"] >= 1 and fig["unit"]
        if fig.get("first_call_s") is not None:
            assert math.isfinite(fig["first_call_s"]) and fig["first_call_s"] >= 0
    return block, figures


def _paper_and_tiny():
    from jaxsr.config import load_config

    # XLA's convolutions, whose FLOPs the analytic count describes (Winograd's dots count differently)
    lax = ["--config.model.conv_impl=lax"]
    return {"acdc_paper": load_config("acdc_paper", lax), "tiny": load_config(QUICK_CONFIG, list(QUICK_OVERRIDES) + lax)}


# -- the train suite's --quick JSON -------------------------------------------------------------------------------


@pytest.mark.slow  # runs a benchmark suite (worker processes, timed rounds)
def test_quick_train_suite_carries_analytic_flops_and_per_round_twin_ratios(tmp_path):
    """jaxsr and the plain-JAX twin in their own processes, checked equal, then timed in 3 interleaved rounds."""
    result = _run_suite(tmp_path, "train", "--peers", "jax_twin", "--loop-steps", "0")
    block, figures = _check_figures(result, "train")
    assert block["flops_counted"].startswith("analytic: 3x3 convolutions only")
    assert block["peaks"]["float32"]["precision"] == "fp32" and block["peaks"]["float32"]["flops_per_s"] > 1e8
    # Both workers pinned to the same CPUs with the same thread count.
    infos = block["workers"]
    assert set(infos) == {"jaxsr", "jax_twin"}
    assert {tuple(i["cpus"]) for i in infos.values()} == {tuple(block["cpus"])}
    assert {i["threads"] for i in infos.values()} == {block["threads"]} and infos["jaxsr"]["local_devices"] == 1
    config = block["configs"][QUICK_CONFIG]
    assert config["equivalence"]["jaxsr"]["ok"] and config["equivalence"]["jax_twin"]["ok"]
    model = _paper_and_tiny()["tiny"].model
    kinds = set()
    for w in config["workloads"]:
        kinds.add(w["kind"])
        size = w["image_size"]
        assert w["flops_per_image"] == flops.per_image(w["kind"], model, size)
        assert w["xla_unoptimised_flops_per_image"] > 0
        ratio = w["ratios"]["jaxsr / jax_twin"]
        rates = w["images_per_s"]
        assert len(ratio["per_round"]) == len(rates["jaxsr"]["per_round"]) == 3
        for r, a, b in zip(ratio["per_round"], rates["jaxsr"]["per_round"], rates["jax_twin"]["per_round"]):
            assert r == pytest.approx(a / b)
        assert ratio["min"] <= ratio["median"] <= ratio["max"]
        assert 0 < w["mfu"]["jaxsr"] < 1
    assert kinds == {"train", "infer"}
    names = {f["name"] for f in figures}
    assert {"train step: jaxsr / jax_twin", "inference (encode+decode): jaxsr / jax_twin",
            "train step: jaxsr MFU (fp32)"} <= names


@pytest.mark.slow
def test_quick_train_suite_all_peers_and_loop(tmp_path):
    """Every peer (PyTorch when installed, else recorded as skipped) and `jaxsr train`'s loop figure."""
    result = _run_suite(tmp_path, "train")
    block, _ = _check_figures(result, "train")
    config = block["configs"][QUICK_CONFIG]
    if impl_torch.missing():
        assert "not installed" in block["peers_skipped"]["torch"]
        assert "not installed" in block["peers_skipped"]["torch_kept_memory"]
    else:
        assert config["equivalence"]["torch"]["ok"] and config["equivalence"]["torch (float64)"]["ok"]
        assert {"jaxsr / torch", "jaxsr / torch_kept_memory"} <= set(config["workloads"][0]["ratios"])
        # the like-for-like peer runs with jaxsr's host-memory policy, the plain one as users run PyTorch
        assert block["workers"]["torch_kept_memory"]["keep_freed_memory"] is (platform.libc_ver()[0] == "glibc")
        assert block["workers"]["torch"]["keep_freed_memory"] is False
    assert block["workers"]["jaxsr"]["keep_freed_memory"] is (platform.libc_ver()[0] == "glibc")
    loop = config["loop"]
    assert loop["steps"] == 50 and loop["log_every"] == 100 and len(loop["logged_rates"]) == 1  # one log, at the last step
    assert loop["images_per_s"] > 0 and loop["loop_over_step"] > 0


def test_torch_absent_is_recorded_as_skipped(monkeypatch):
    class Pool:
        def start(self, impl):
            return impl

    monkeypatch.setattr(impl_torch, "missing", lambda: "PyTorch is not installed (pip install '.[peer]')")
    started, skipped = suite_train.start_peers(Pool(), ["jax_twin", "torch"], {"backend": "cpu"})
    assert started == {"jax_twin": "jax_twin"}
    assert skipped == {"torch": "PyTorch is not installed (pip install '.[peer]')"}
    text = table.render({"train": {"figures": [{"name": "peer torch", "skipped": skipped["torch"]}]}})
    assert "skipped: PyTorch is not installed" in text


# -- FLOPs: the analytic count against the architecture and against XLA --------------------------------------------


def _written_out_forward(m, size: int, taps) -> float:
    """The architecture written out here, independently of benchmarks.net_spec; taps(side) per in/out channel pair."""
    widths = [m.base_features * 2**i for i in range(m.num_blocks)]
    total, cin, side = 0.0, 1, size
    for w in widths:  # encoder: two convs per block, then 2x2 pooling
        total += 2 * taps(side) * (cin * w + w * w)
        cin, side = w, side // 2
    total += 2 * taps(side) * (cin * m.bottleneck_features + m.bottleneck_features * m.latent_features)
    total += 2 * taps(side) * m.latent_features * m.bottleneck_features  # decoder input conv
    cin = m.bottleneck_features
    for w in reversed(widths):  # decoder: two convs per block, then 2x nearest upsampling
        total += 2 * taps(side) * (cin * w + w * w)
        cin, side = w, side * 2
    assert side == size
    return total + 2 * taps(side) * (cin * cin + cin * 1)  # the last two convs


def test_analytic_count_is_the_architecture_and_its_parameters():
    configs = _paper_and_tiny()
    for name, config in configs.items():
        m = config.model
        assert flops.forward_flops(m, 64) == _written_out_forward(m, 64, lambda n: 9 * n * n), name
        assert flops.per_image("train", m, 64) == 3 * flops.forward_flops(m, 64)
        assert flops.per_image("infer", m, 64) == flops.forward_flops(m, 64)
    assert net_spec.parameter_count(configs["acdc_paper"].model) == 3_608_433  # the paper network's count


def _conv_outputs(m, size: int) -> int:
    """Output elements of every conv of one image (where the elementwise work happens)."""
    return sum((size >> c.level) ** 2 * c.cout for c in net_spec.convs(m))


@pytest.mark.parametrize("name", ["acdc_paper", "tiny"])
def test_analytic_count_matches_xla_unoptimised_cost_analysis(name):
    """XLA's count of the lowered (unoptimised) programs, forward and train step, on CPU.

    Known differences, accounted for here rather than hidden in a loose bound:
    - XLA counts only the taps that fall inside the image: a 3x3 'same' conv at side n
      costs it 2*Cin*Cout*(3n-2)**2, the analytic count 2*Cin*Cout*9n**2 (dense, padded).
      Written out with (3n-2)**2 taps, the architecture is a lower bound on XLA's count.
    - XLA also counts the elementwise work, which the analytic count leaves out: bias,
      leaky ReLU, batch norm and pooling, at most 8 FLOPs per conv output element in the
      forward pass (measured: 5.1 tiny, 5.5 paper); in a training step their gradients too,
      plus Adam and the gradient norm, at most 16 per conv output element and 32 per
      parameter. A training step also skips the first conv's input gradient.
    So a conv missing from (or added to) the analytic count shows up as XLA's count
    leaving these bounds. Against the analytic count itself XLA is 2-4 % lower (border taps).
    """
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from jaxsr.train import step as step_lib
    from jaxsr.train.state import init_train_state

    config = _paper_and_tiny()[name]
    m, size = config.model, int(config.data.crop_size)
    in_bounds = _written_out_forward(m, size, lambda n: (3 * n - 2) ** 2)
    outputs, params = _conv_outputs(m, size), net_spec.parameter_count(m)
    analytic = flops.forward_flops(m, size)

    model, optimizer = nnx.eval_shape(lambda: init_train_state(config))  # shapes only: nothing is computed
    model.eval()
    graphdef, state = nnx.split(model)
    image = jax.ShapeDtypeStruct((1, size, size, 1), jnp.float32)
    forward = flops.xla_flops(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(state, image))
    assert 0 <= forward - in_bounds <= 8 * outputs, (forward, in_bounds, outputs)
    assert forward == pytest.approx(analytic, rel=0.05)

    graphdef, state = nnx.split((model, optimizer))
    train = flops.xla_flops(step_lib.build_step(graphdef, config.loss).lower(state, {"image": image}))
    in_bounds_train = 3 * in_bounds - 2 * (3 * size - 2) ** 2 * 1 * m.base_features  # no input gradient of conv 1
    assert 0 <= train - in_bounds_train <= 16 * outputs + 32 * params, (train, in_bounds_train, outputs, params)
    assert train == pytest.approx(flops.per_image("train", m, size), rel=0.05)


def test_xla_flops_accepts_dict_and_list():
    class Lowered:
        def __init__(self, value):
            self.value = value

        def cost_analysis(self):
            return self.value

    assert flops.xla_flops(Lowered({"flops": 12.0})) == 12.0
    assert flops.xla_flops(Lowered([{"flops": 7.0, "bytes accessed": 1.0}])) == 7.0
    assert flops.xla_flops(Lowered([])) is None


# -- the peer-equivalence check ------------------------------------------------------------------------------------


def _random_weights(m, seed: int = 0) -> dict[str, np.ndarray]:
    """Weights for every tensor of benchmarks.net_spec, keyed by NNX path, He-scaled so activations stay O(1)."""
    rng = np.random.default_rng(seed)
    out = {}
    for layer in net_spec.encoder_layers(m) + net_spec.decoder_layers(m):
        if isinstance(layer, net_spec.Conv):
            scale = np.sqrt(2.0 / (9 * layer.cin))
            out[layer.name + "/kernel"] = (scale * rng.standard_normal((3, 3, layer.cin, layer.cout))).astype(np.float32)
            out[layer.name + "/bias"] = (0.1 * rng.standard_normal(layer.cout)).astype(np.float32)
        elif isinstance(layer, net_spec.Norm):
            out[layer.name + "/scale"] = rng.uniform(0.5, 1.5, layer.features).astype(np.float32)
            out[layer.name + "/bias"] = (0.1 * rng.standard_normal(layer.features)).astype(np.float32)
            out[layer.name + "/mean"] = (0.1 * rng.standard_normal(layer.features)).astype(np.float32)
            out[layer.name + "/var"] = rng.uniform(0.5, 1.5, layer.features).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The tiny network with random weights, the twin's float64 reference and float32 result, the tolerances.

    (That jaxsr itself passes the check is asserted on the suite's own run above.)
    """
    tmp = tmp_path_factory.mktemp("equivalence")
    model = _paper_and_tiny()["tiny"].model.to_dict()
    np.savez(tmp / "weights.npz", **_random_weights(types.SimpleNamespace(**model)))
    size = 32
    np.savez(tmp / "x.npz", x=np.random.default_rng(7).random((2, size, size, 1), dtype=np.float32))
    twin = impl_jax_twin.Worker(1)
    twin.load(model, str(tmp / "weights.npz"), 1e-3)
    twin.check(str(tmp / "x.npz"), str(tmp / "ref.npz"), float64=True)
    twin.check(str(tmp / "x.npz"), str(tmp / "twin32.npz"))
    reference, twin32 = dict(np.load(tmp / "ref.npz")), dict(np.load(tmp / "twin32.npz"))
    return {"tmp": tmp, "model": model, "reference": reference, "twin32": twin32,
            "tol": equivalence.tolerances(twin32, reference)}


def _peer_result(exported, weights: dict, float64: bool, **model_changes) -> dict:
    tmp = exported["tmp"]
    np.savez(tmp / "peer_weights.npz", **weights)
    peer = impl_jax_twin.Worker(1)
    peer.load({**exported["model"], **model_changes}, str(tmp / "peer_weights.npz"), 1e-3)
    peer.check(str(tmp / "x.npz"), str(tmp / "peer.npz"), float64=float64)
    return dict(np.load(tmp / "peer.npz"))


def test_equivalence_passes_the_same_function(exported):
    tol, ref = exported["tol"], exported["reference"]
    assert equivalence.compare(exported["twin32"], ref, tol, "float32")["ok"]
    assert equivalence.compare(_peer_result(exported, dict(np.load(exported["tmp"] / "weights.npz")), True),
                               ref, tol, "float64")["ok"]
    # The tolerances are float32-sized, not loose: 16x a noise of a few ulps to a few hundred.
    for q in equivalence.QUANTITIES:
        assert 16 * equivalence.EPS32 <= tol[q]["float32_noise"] < 1e-3, (q, tol[q])


@pytest.mark.parametrize("precision", ["float32", "float64"])
def test_equivalence_catches_perturbed_weights(exported, precision):
    """One kernel off by 0.1 % (or every weight by 1e-6 in float64) is a different function."""
    weights = dict(np.load(exported["tmp"] / "weights.npz"))
    weights["encoder/blocks/1/conv1/kernel"] = weights["encoder/blocks/1/conv1/kernel"] * 1.001
    result = _peer_result(exported, weights, precision == "float64")
    report = equivalence.compare(result, exported["reference"], exported["tol"], precision)
    assert not report["ok"] and "forward off by" in report["why"]
    if precision == "float64":
        rng = np.random.default_rng(0)
        weights = {k: v * (1 + 1e-6 * rng.standard_normal(v.shape)) for k, v in np.load(exported["tmp"] / "weights.npz").items()}
        report = equivalence.compare(_peer_result(exported, weights, True), exported["reference"], exported["tol"], "float64")
        assert not report["ok"], report


def test_equivalence_catches_a_different_network(exported):
    weights = dict(np.load(exported["tmp"] / "weights.npz"))
    wrong_slope = _peer_result(exported, weights, False, negative_slope=0.02)
    assert not equivalence.compare(wrong_slope, exported["reference"], exported["tol"], "float32")["ok"]
    missing = {k: v for k, v in exported["twin32"].items() if not k.endswith("head2/bias")}
    report = equivalence.compare(missing, exported["reference"], exported["tol"], "float32")
    assert not report["ok"] and report["why"].startswith("different parameters")


def test_torch_peer_is_the_same_function(exported):
    if impl_torch.missing():
        pytest.skip(impl_torch.missing())
    tmp = exported["tmp"]
    peer = impl_torch.Worker(1)
    loaded = peer.load(exported["model"], str(tmp / "weights.npz"), 1e-3)
    assert loaded["parameters"] == net_spec.parameter_count(types.SimpleNamespace(**exported["model"]))
    for float64, precision in ((False, "float32"), (True, "float64")):
        peer.check(str(tmp / "x.npz"), str(tmp / "torch.npz"), float64=float64)
        report = equivalence.compare(dict(np.load(tmp / "torch.npz")), exported["reference"], exported["tol"], precision)
        assert report["ok"], report


def test_a_peer_that_is_not_the_same_function_is_not_timed(exported):
    weights = dict(np.load(exported["tmp"] / "weights.npz"))
    weights["decoder/head1/kernel"] = weights["decoder/head1/kernel"] * 1.001
    wrong = _peer_result(exported, weights, False)
    ref, tol = exported["reference"], exported["tol"]
    report = {"jaxsr": equivalence.compare(exported["twin32"], ref, tol, "float32"),
              "jax_twin": equivalence.compare(exported["twin32"], ref, tol, "float32"),
              "torch": equivalence.compare(wrong, ref, tol, "float32")}
    figures = []
    timed = suite_train.peers_to_time(report, {"jax_twin": "w1", "torch": "w2"}, ["jax_twin", "torch"], "tiny", figures)
    assert timed == {"jax_twin": "w1"}
    assert figures[0]["name"] == "peer torch on tiny" and "torch: forward off by" in figures[0]["skipped"]
    report["jaxsr"] = report["torch"]  # jaxsr itself off: nothing is compared with it
    assert suite_train.peers_to_time(report, {"jax_twin": "w1"}, ["jax_twin"], "tiny", []) == {}


# -- interleaved rounds and worker processes ------------------------------------------------------------------------


def test_rounds_interleave_and_take_ratios_within_each_round():
    order = []

    class Fake:
        def __init__(self, name, seconds):
            self.name, self.seconds = name, iter(seconds)

        def call(self, cmd, steps):
            order.append((self.name, steps))
            return next(self.seconds)

    workers = {"jaxsr": Fake("jaxsr", [1.0, 2.0, 1.0]), "peer": Fake("peer", [2.0, 2.0, 4.0])}
    m = rounds.interleaved(workers, items_per_step=8, warm_step_s={"jaxsr": 0.5, "peer": 1.0}, rounds=3,
                           segment_s=1.0, gap_s=0.0)
    assert order == [("jaxsr", 2), ("peer", 1)] * 3  # A B A B A B, whole steps of about segment_s
    assert m["rates"] == {"jaxsr": [16.0, 8.0, 16.0], "peer": [4.0, 4.0, 2.0]}
    ratio = rounds.ratios(m["rates"], "jaxsr")["jaxsr / peer"]
    assert ratio["per_round"] == [4.0, 2.0, 8.0] and ratio["median"] == 4.0
    assert (ratio["min"], ratio["max"]) == (2.0, 8.0)


def test_worker_env_same_threads_no_fake_devices():
    env = processes.worker_env(3, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_cpu_use_xnnpack=true",
                                   "PYTHONPATH": "/elsewhere"})
    assert env["XLA_FLAGS"] == "--xla_cpu_use_xnnpack=true"
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert env["PYTHONPATH"].split(":") == [str(processes.REPO), "/elsewhere"]
    assert "XLA_FLAGS" not in processes.worker_env(1, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})


def test_worker_reports_a_failure_on_one_line(tmp_path):
    w = processes.Worker("jax_twin", sorted(os.sched_getaffinity(0))[:1], 1, tmp_path)
    try:
        assert w.call("info")["threads"] == 1
        with pytest.raises(processes.WorkerError, match="jax_twin: .*Error") as error:
            w.call("load", model={}, weights=str(tmp_path / "missing.npz"), learning_rate=1e-3)
        assert "\n" not in str(error.value) and not error.value.oom
    finally:
        w.close()
    assert w.proc.returncode == 0


# -- peaks -------------------------------------------------------------------------------------------------------


def test_peak_of_the_precision_used():
    h100 = "NVIDIA H100 80GB HBM3"
    assert peak.precision_used("gpu", "float32", "9.0") == "tf32"
    assert peak.precision_used("gpu", "float32", "7.0") == "fp32"
    assert peak.precision_used("gpu", "bfloat16", "9.0") == "bf16"
    assert peak.precision_used("tpu", "float32") == "bf16"
    assert peak.precision_used("cpu", "float32") == "fp32"
    assert peak.vendor_peak(h100, "tf32") == 494.7e12 and peak.vendor_peak(h100, "bf16") == 989.4e12
    assert peak.vendor_peak("NVIDIA H100 PCIe", "bf16") == 756e12
    assert peak.vendor_peak("TPU v5 lite", "bf16") == 197e12 and peak.vendor_peak("TPU v5", "bf16") == 459e12
    assert peak.vendor_peak("Tesla V100-SXM2-16GB", "tf32") is None
    info = {"backend": "gpu", "device_kind": h100, "compute_capability": "9.0"}
    p = peak.peak_for(info, "float32", measure=lambda dtype: pytest.fail("no matmul on a known GPU"))
    assert p["precision"] == "tf32" and p["flops_per_s"] == 494.7e12 and "vendor" in p["source"]


def test_measured_matmul_peak_is_a_sane_rate():
    p = peak.measured_matmul_peak("float32", n=256, repeats=3)
    assert p["n"] == 256 and 1e7 < p["median_flops_per_s"] <= p["flops_per_s"] < 1e15


def test_timing_summary_and_derived_figures():
    timing = common.Timing(first_call_s=3.0, repeats_s=[1.0, 2.0, 4.0])
    fig = common.figure("x", timing, 8, "images")
    assert fig["median"] == 4.0 and fig["min"] == 2.0 and fig["max"] == 8.0 and fig["first_call_s"] == 3.0
    doubled = common.derived("y", fig, 2.0, "FLOP/s")
    assert doubled["median"] == 8.0 and doubled["max"] == 16.0 and doubled["unit"] == "FLOP/s"


# -- the other suites -----------------------------------------------------------------------------------------------


@pytest.mark.slow  # runs a benchmark suite (worker processes, timed rounds)
def test_quick_upsample_suite(tmp_path):
    result = _run_suite(tmp_path, "upsample")
    block, figures = _check_figures(result, "upsample")
    names = {f["name"] for f in figures}
    assert {"latent compute (stack in, slices out)", "scipy linear (order 1)", "scipy cubic B-spline (order 3)"} <= names
    assert block["settings"]["output_slices"] == (2 * block["settings"]["input_shape"][2] - 1) * block["settings"]["input_shape"][3]


@pytest.mark.slow  # runs a benchmark suite (worker processes, timed rounds)
def test_quick_reprocess_suite(tmp_path):
    result = _run_suite(tmp_path, "reprocess")
    block, figures = _check_figures(result, "reprocess")
    ratio = [f for f in figures if f["unit"] == "ratio"][0]
    # End to end includes the compute, so it cannot beat compute alone by much (timing noise aside).
    assert ratio["median"] > 0.5


@pytest.mark.slow
def test_quick_quality_suite(tmp_path):
    result = _run_suite(tmp_path, "quality")
    block, figures = _check_figures(result, "quality")
    assert set(block["quality"]) == {"ae", "linear", "bspline", "lanczos"}
    assert block["model"]["source"] == "briefly trained tiny model"
    assert block["model"]["last_loss"] < block["model"]["first_loss"]
    for method in block["quality"].values():
        assert 0 < method["ssim"]["median"] <= 1 and method["psnr"]["median"] > 5


@pytest.mark.slow
def test_quick_input_suite(tmp_path):
    result = _run_suite(tmp_path, "input")
    block, figures = _check_figures(result, "input")
    assert "input_bound" in block


def test_table_renders_every_figure_and_skips():
    suites = {"a": {"figures": [{"name": "f", "unit": "images/s", "median": 2.0, "min": 1.0, "max": 3.0,
                                 "first_call_s": 0.5, "batch_size": 8}]},
              "b": {"skipped": "no module"}}
    text = table.render(suites)
    assert "images/s" in text and "batch_size=8" in text and "no module" in text
    assert len(text.splitlines()) == 4


def test_suites_run_train_first_and_unknown_is_refused():
    with pytest.raises(SystemExit):
        run.parse_args(["--suite", "nope"])
    assert run.selected(run.parse_args(["--suite", "all"])) == [s for s in run.SUITES if s not in run.EXPLICIT_ONLY]
    assert "real" in run.EXPLICIT_ONLY and run.selected(run.parse_args(["--suite", "real"])) == ["real"]
    assert run.selected(run.parse_args(["--suite", "input", "--suite", "train"])) == ["train", "input"]
