"""benchmarks/: --quick runs of every suite, the JSON's fields, and FLOP counts against the architecture."""

import json
import math

import numpy as np
import pytest

from benchmarks import common, run, table, torch_peer, workloads

ENV_FIELDS = ("date", "backend", "device_kind", "device_count", "local_device_count", "versions")


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
    assert env["device_count"] >= 1 and env["versions"]["jax"] and env["versions"]["flax"]
    assert "optax" in env["versions"]
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


def test_quick_train_suite_one_config(tmp_path):
    """The fast variant: paper config, float32, no peer; FLOPs per image about 3x the forward pass."""
    result = _run_suite(tmp_path, "train", "--configs", "acdc_paper", "--dtypes", "float32", "--no-peer",
                        "--device-counts", "", "--repeats", "2")
    block, figures = _check_figures(result, "train")
    assert {"train step", "achieved FLOP/s"} <= {f["name"] for f in figures}
    assert block["step_source"] == ["jaxsr.train.step.build_step"]
    step = block["steps"][0]
    forward = workloads.forward_conv_flops(workloads.tiny(workloads.load_config("acdc_paper")).model, 32)
    assert 2.5 < step["flops_per_step"] / step["batch_size"] / forward < 3.6
    assert block["peer"] == {"skipped": "--no-peer"}
    assert "skipped" in block["scaling"]


@pytest.mark.slow
def test_quick_train_suite_all_configs(tmp_path):
    result = _run_suite(tmp_path, "train")
    block, figures = _check_figures(result, "train")
    steps = [f for f in figures if f["name"] == "train step"]
    # 2 configurations x 2 dtypes x the quick batch sizes, each with its context.
    assert {(f["config"], f["dtype"]) for f in steps} == {
        (c + " (tiny)", d) for c in ("acdc_paper", "acdc_followup") for d in ("float32", "bfloat16")}
    for f in steps:
        assert f["batch_size"] > 0 and f["devices"] >= 1 and f["first_call_s"] > 0


@pytest.mark.slow
def test_quick_train_suite_fields_flops_peer_scaling(tmp_path):
    result = _run_suite(tmp_path, "train", "--configs", "acdc_paper", "--dtypes", "float32")
    block, figures = _check_figures(result, "train")
    names = {f["name"] for f in figures}
    assert {"train step", "achieved FLOP/s", "PyTorch eager train step", "jaxsr / PyTorch"} <= names
    frac = [f for f in figures if f["name"].startswith("fraction of peak")]
    assert frac and all(0 < f["median"] < 1 for f in frac)
    # The peak: measured matmul on CPU, positive.
    assert block["peaks"]["float32"]["per_device_flops_per_s"] > 1e8
    # Training FLOPs per image are about 3x the forward pass (forward + 2 backward convs).
    step = block["steps"][0]
    forward = workloads.forward_conv_flops(workloads.tiny(workloads.load_config("acdc_paper")).model, 32)
    per_image = step["flops_per_step"] / step["batch_size"]
    assert 2.5 < per_image / forward < 3.6, per_image / forward
    # The peer mirrors the model exactly.
    for r in block["peer"]["runs"]:
        assert r["parameters_match"], r
    # Scaling over 1, 2, 4, 8 of the 8 test devices.
    import jax

    if jax.local_device_count() >= 2:  # quick: the two ends of 1, 2, 4, 8
        assert set(block["scaling"]["images_per_s"]) == {"1", str(min(8, jax.local_device_count()))}
    assert block["settings"]["batch_sizes"] == [8]


def test_forward_cost_analysis_matches_conv_formula():
    """XLA's FLOPs of the forward pass agree with sum over convs of 2*H*W*Cin*Cout*9 within 10%."""
    from benchmarks import suite_train

    config = workloads.load_config("acdc_paper")
    size = 64
    # The architecture written out here, independently of benchmarks.workloads.conv_layers.
    m = config.model
    widths = [m.base_features * 2**i for i in range(m.num_blocks)]
    expected, cin, res = 0, 1, size
    for w in widths:  # encoder: two convs per block, then 2x2 pooling
        expected += 2 * res * res * 9 * (cin * w + w * w)
        cin, res = w, res // 2
    expected += 2 * res * res * 9 * (cin * m.bottleneck_features + m.bottleneck_features * m.latent_features)
    expected += 2 * res * res * 9 * m.latent_features * m.bottleneck_features  # decoder input conv
    cin = m.bottleneck_features
    for w in reversed(widths):  # decoder: two convs per block, then 2x nearest upsampling
        expected += 2 * res * res * 9 * (cin * w + w * w)
        cin, res = w, res * 2
    assert res == size
    expected += 2 * res * res * 9 * (cin * cin + cin * 1)  # the last two convs
    got = suite_train.forward_flops(config, size)
    assert got["conv_formula"] == pytest.approx(expected)
    assert got["xla"] == pytest.approx(expected, rel=0.10)


def test_cost_flops_accepts_dict_and_list():
    from benchmarks import suite_train

    class Compiled:
        def __init__(self, value):
            self.value = value

        def cost_analysis(self):
            return self.value

    assert suite_train.cost_flops(Compiled({"flops": 12.0})) == 12.0
    assert suite_train.cost_flops(Compiled([{"flops": 7.0, "bytes accessed": 1.0}])) == 7.0
    assert suite_train.cost_flops(Compiled([])) is None


def test_peer_parameter_count_equals_jax_model_paper_and_followup():
    ok, why = torch_peer.available()
    if not ok:
        pytest.skip(why)
    for name in (workloads.PAPER, workloads.FOLLOWUP):
        config = workloads.load_config(name)
        torch_model = torch_peer.build_model(config.model)
        jax_model = workloads.make_model(config)
        assert sum(p.numel() for p in torch_model.parameters()) == workloads.param_count(jax_model), name


def test_peer_without_torch_says_skipped(monkeypatch):
    from benchmarks import suite_train

    monkeypatch.setattr(torch_peer, "available", lambda: (False, "PyTorch is not installed (pip install '.[peer]')"))
    figures = []
    out = suite_train.peer({"peer": True, "dtypes": ["float32"]}, {}, figures)
    assert "not installed" in out["skipped"]
    assert figures[0]["skipped"] and "skipped" in table.render({"train": {"figures": figures}})


def test_vendor_peak_and_timing_summary():
    assert common.vendor_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert common.vendor_peak("TPU v5 lite", "float32") == 197e12
    assert common.vendor_peak("cpu", "float32") is None
    timing = common.Timing(first_call_s=3.0, repeats_s=[1.0, 2.0, 4.0])
    fig = common.figure("x", timing, 8, "images")
    assert fig["median"] == 4.0 and fig["min"] == 2.0 and fig["max"] == 8.0 and fig["first_call_s"] == 3.0
    doubled = common.derived("y", fig, 2.0, "FLOP/s")
    assert doubled["median"] == 8.0 and doubled["max"] == 16.0 and doubled["unit"] == "FLOP/s"


def test_measured_matmul_peak_is_a_sane_rate():
    from benchmarks import peak

    p = peak.measured_matmul_peak("float32", n=256, repeats=3)
    assert p["n"] == 256 and 1e7 < p["flops_per_s"] < 1e15
    assert p["best_flops_per_s"] >= p["flops_per_s"]


def test_quick_upsample_suite(tmp_path):
    result = _run_suite(tmp_path, "upsample")
    block, figures = _check_figures(result, "upsample")
    names = {f["name"] for f in figures}
    assert {"latent compute (stack in, slices out)", "scipy linear (order 1)", "scipy cubic B-spline (order 3)"} <= names
    assert block["settings"]["output_slices"] == (2 * block["settings"]["input_shape"][2] - 1) * block["settings"]["input_shape"][3]


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


def test_all_unknown_suite_is_refused():
    with pytest.raises(SystemExit):
        run.parse_args(["--suite", "nope"])
    assert run.selected(run.parse_args(["--suite", "all"])) == list(run.SUITES)
