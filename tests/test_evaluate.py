"""The drop-every-other-slice protocol and its statistics, with stand-in methods and metrics."""

import json

import nibabel as nib
import numpy as np
import pytest
from scipy import stats as scipy_stats

from jaxsr import evaluate, stats
from jaxsr.scores import ScoreTable, _bucket, score_images


# ----------------------------------------------------------------------------
# Stand-ins: numpy interpolation and metrics, so the protocol is tested on its own


def linear_standin(stack, positions):
    lo = np.clip(np.floor(positions).astype(int), 0, stack.shape[2] - 1)
    hi = np.minimum(lo + 1, stack.shape[2] - 1)
    a = (positions - lo)[None, None, :, None]
    return (1 - a) * stack[:, :, lo] + a * stack[:, :, hi]


def nearest_noisy_standin(stack, positions):
    """A worse "autoencoder": the lower neighbour plus a fixed amount of noise everywhere."""
    lo = np.floor(positions).astype(int)
    noise = np.random.default_rng(1).normal(0, 0.02, stack.shape[:2] + (len(positions), stack.shape[3]))
    return np.clip(stack[:, :, lo] + noise, 0, 1)


def linear_noisy_standin(stack, positions):
    """A stand-in for the residual mix: linear interpolation, noisy between acquired slices, exact on them."""
    out = linear_standin(stack, positions)
    new = positions != np.round(positions)
    out[:, :, new] += np.random.default_rng(2).normal(0, 0.005, out[:, :, new].shape)
    return np.clip(out, 0, 1)


def psnr_standin(a, b):
    mse = np.mean((np.asarray(a, np.float64) - b) ** 2, axis=(1, 2, 3))
    with np.errstate(divide="ignore"):
        return 10 * np.log10(1.0 / mse)


def ssim_standin(a, b):
    """Single-window SSIM over the whole image (data range 1)."""
    a = np.asarray(a, np.float64).reshape(a.shape[0], -1)
    b = np.asarray(b, np.float64).reshape(b.shape[0], -1)
    c1, c2 = 0.01**2, 0.03**2
    ma, mb = a.mean(1), b.mean(1)
    va, vb = a.var(1), b.var(1)
    cov = ((a - ma[:, None]) * (b - mb[:, None])).mean(1)
    return (2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))


def vif_standin(reference, test):
    """Asymmetric, like VIF: relative error normalised by the reference."""
    reference = np.asarray(reference, np.float64)
    return 1.0 - np.mean(np.abs(test - reference), axis=(1, 2, 3)) / np.mean(reference, axis=(1, 2, 3))


METRICS = {"ssim": ssim_standin, "psnr": psnr_standin, "vif": vif_standin}


def linear_volume(nx=16, ny=12, nz=7, nt=2, seed=0):
    """Intensity linear along z in every voxel and frame, within [0.05, 0.95] for nz <= 8."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(0.35, 0.65, (nx, ny, 1, nt))
    slope = rng.uniform(-0.04, 0.04, (nx, ny, 1, nt))
    return (start + slope * np.arange(nz)[None, None, :, None]).astype(np.float32)


# ----------------------------------------------------------------------------
# Indexing


def test_drop_every_other_odd_count_scores_every_odd_slice():
    plan = evaluate.drop_every_other(7)
    np.testing.assert_array_equal(plan.kept, [0, 2, 4, 6])
    np.testing.assert_array_equal(plan.dropped, [1, 3, 5])
    np.testing.assert_allclose(plan.positions, [0.5, 1.5, 2.5])
    assert plan.skipped.size == 0
    np.testing.assert_array_equal(plan.covered, np.arange(7))
    np.testing.assert_allclose(plan.all_positions, np.arange(7) / 2)


def test_drop_every_other_even_count_skips_last_odd_slice():
    plan = evaluate.drop_every_other(8)
    np.testing.assert_array_equal(plan.kept, [0, 2, 4, 6])
    np.testing.assert_array_equal(plan.dropped, [1, 3, 5])
    np.testing.assert_array_equal(plan.skipped, [7])
    np.testing.assert_array_equal(plan.covered, np.arange(7))
    with pytest.raises(ValueError):
        evaluate.drop_every_other(2)


def test_crop_inplane_centre_crop_and_zero_pad():
    x = np.arange(10 * 6, dtype=np.float32).reshape(10, 6, 1, 1) + 1
    out = evaluate.crop_inplane(x, 8)
    assert out.shape == (8, 8, 1, 1)
    np.testing.assert_array_equal(out[:, 1:7, 0, 0], x[1:9, :, 0, 0])  # rows 1..8 kept, cols padded 1 + 1
    assert np.all(out[:, 0] == 0) and np.all(out[:, 7] == 0)
    assert evaluate.crop_inplane(x, None) is x


def test_methods_get_kept_slices_and_half_positions():
    stack = linear_volume(nz=8)
    seen = {}

    def recording(kept, positions):
        seen["kept"], seen["positions"] = kept.copy(), np.array(positions)
        return linear_standin(kept, positions)

    result = evaluate.evaluate_stack(stack, {"ae": recording}, METRICS, name="v")
    np.testing.assert_array_equal(seen["kept"], stack[:, :, [0, 2, 4, 6]])
    np.testing.assert_allclose(seen["positions"], [0, 0.5, 1, 1.5, 2, 2.5, 3])
    dropped = result.scores.select(variant="dropped")
    assert sorted(set(dropped["slice"].tolist())) == [1, 3, 5]  # slice 7 has no right neighbour
    assert len(dropped) == 3 * stack.shape[3]
    assert sorted(set(result.scores.select(variant="all")["slice"].tolist())) == list(range(7))


def test_scores_land_on_the_right_frame_and_slice():
    """An oracle off by a known amount per (frame, slice): each row's PSNR must match its key."""
    stack = linear_volume(nz=7, nt=3) * 0.5 + 0.2
    offset = 0.01 * (np.arange(7)[:, None] + 1) * (np.arange(3)[None, :] + 1)  # (slice, frame)

    def oracle(kept, positions):
        covered = np.round(np.asarray(positions) * 2).astype(int)
        return stack[:, :, covered] + offset[covered][None, None]

    scores = evaluate.evaluate_stack(stack, {"oracle": oracle}, METRICS).scores
    expected = -20 * np.log10(offset[scores["slice"], scores["frame"]])
    np.testing.assert_allclose(scores["psnr"], expected, rtol=1e-4)


# ----------------------------------------------------------------------------
# The protocol on a volume where the answer is known


def test_linear_interpolation_is_exact_and_wins_on_linear_volume():
    stack = linear_volume()
    methods = {"ae": nearest_noisy_standin, "linear": linear_standin}
    result = evaluate.evaluate_stack(stack, methods, METRICS, name="lin")
    lin = result.scores.select(method="linear", variant="dropped")
    ae = result.scores.select(method="ae", variant="dropped")
    assert np.all(lin["ssim"] > 0.9999)
    assert np.all(lin["psnr"] > 60)
    assert np.all(ae["psnr"] < 40)
    summary = stats.summarise(result.scores)
    block = summary["variants"]["dropped"]
    for metric in ("ssim", "psnr", "vif"):
        assert block["winners"][metric]["best"] == ["linear"]
        assert block["winners"][metric]["reference_wins"] is False
        assert block["wilcoxon"]["linear"][metric]["p"] > 0.5  # "AE better" is not supported
    # Paper-compatible variant: linear returns kept slices exactly -> PSNR inf there, capped in stats.
    all_lin = result.scores.select(method="linear", variant="all")
    assert np.isinf(all_lin["psnr"][all_lin["slice"] % 2 == 0]).all()
    assert summary["variants"]["all"]["methods"]["linear"]["psnr"]["median"] <= stats.PSNR_CAP_DB


def test_real_baselines_exact_on_linear_volume():
    baselines = pytest.importorskip("jaxsr.baselines")
    stack = linear_volume()
    methods = {name: (lambda s, p, _m=name: baselines.resample_slices(s, p, _m)) for name in ("linear", "bspline", "lanczos")}
    methods["ae"] = nearest_noisy_standin
    scores = evaluate.evaluate_stack(stack, methods, METRICS).scores.select(variant="dropped")
    assert np.all(scores.select(method="linear")["psnr"] > 60)
    summary = stats.summarise(scores)
    assert summary["variants"]["dropped"]["winners"]["psnr"]["best"][0] != "ae"


def test_evaluate_volumes_from_nifti(tmp_path):
    """Load + preprocess path: margins at 0 and 1 make percentile scaling affine, so linear stays exact."""
    data = np.zeros((20, 20, 5, 2), np.float32)
    data[2:18, 2:18] = linear_volume(16, 16, 5, 2) * 100
    data[:2] = 100.0  # >1 % of voxels at the maximum: the 99th percentile equals it, nothing is clamped
    paths = []
    for i in range(2):
        path = tmp_path / f"v{i}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.diag([1.4, 1.4, 10.0, 1.0])), str(path))
        paths.append(path)
    ev = evaluate.evaluate_volumes(paths, {"ae": nearest_noisy_standin, "linear": linear_standin}, METRICS,
                                   target_mm=1.4, crop_size=16, n_examples=1, through_plane_factor=2)
    assert ev.counts["volumes"] == 2 and ev.counts["frames"] == 4
    assert ev.counts["slices_scored"] == 4 * 2  # slices 1 and 3 per frame
    assert np.all(ev.scores.select(method="linear", variant="dropped")["psnr"] > 60)
    assert len(ev.examples) == 1 and ev.examples[0].slice in (1, 3)
    tp = ev.through_plane
    np.testing.assert_allclose(tp.positions, np.arange(9) / 2)
    assert tp.slice_mm == pytest.approx(10.0)
    # Acquired slices are kept as they are in the upsampled view.
    np.testing.assert_allclose(tp.upsampled["ae"][:, ::2], tp.acquired, atol=1e-6)


# ----------------------------------------------------------------------------
# Statistics


def _table(values: dict[str, dict[str, np.ndarray]], variant="dropped") -> ScoreTable:
    tables = []
    for method, metrics in values.items():
        n = len(next(iter(metrics.values())))
        cols = {"volume": np.array(["a"] * n, object), "frame": np.zeros(n, np.int64), "slice": np.arange(n),
                "method": np.array([method] * n, object), "variant": np.array([variant] * n, object)}
        for m in ("ssim", "psnr", "vif"):
            cols[m] = np.asarray(metrics.get(m, np.full(n, np.nan)), np.float64)
        tables.append(ScoreTable(cols))
    return ScoreTable.concat(tables)


AE_SSIM = np.array([0.91, 0.88, 0.93, 0.85, 0.90, 0.87, 0.92, 0.89, 0.86, 0.94, 0.90, 0.88])
LIN_SSIM = np.array([0.89, 0.86, 0.93, 0.84, 0.91, 0.85, 0.90, 0.88, 0.83, 0.92, 0.87, 0.88])
AE_PSNR = np.array([30.1, 29.5, np.inf, 31.0, 30.4, 28.9, 30.8, 29.9, 30.2, 31.5, 30.0, 29.7])
LIN_PSNR = np.array([31.0, 30.2, np.inf, 31.8, 30.9, 29.6, 31.2, 30.5, 30.9, 32.0, 30.8, 30.1])


def test_statistics_match_scipy_and_numpy():
    vif = np.linspace(0.5, 0.6, 12)
    table = _table({"ae": {"ssim": AE_SSIM, "psnr": AE_PSNR, "vif": vif},
                    "linear": {"ssim": LIN_SSIM, "psnr": LIN_PSNR, "vif": vif}})
    summary = stats.summarise(table)
    block = summary["variants"]["dropped"]
    s = block["methods"]["ae"]["ssim"]
    assert (s["median"], s["q25"], s["q75"]) == pytest.approx(tuple(np.percentile(AE_SSIM, [50, 25, 75])))
    # PSNR: inf capped for every method, so the medians are finite and the pair ties.
    capped = np.minimum(AE_PSNR, stats.PSNR_CAP_DB)
    assert block["methods"]["ae"]["psnr"]["median"] == pytest.approx(np.median(capped))
    w = block["wilcoxon"]["linear"]
    assert w["ssim"]["p"] == pytest.approx(scipy_stats.wilcoxon(AE_SSIM, LIN_SSIM, alternative="greater").pvalue)
    expected_psnr = scipy_stats.wilcoxon(capped, np.minimum(LIN_PSNR, stats.PSNR_CAP_DB), alternative="greater")
    assert w["psnr"]["p"] == pytest.approx(expected_psnr.pvalue)
    assert w["psnr"]["n_pairs"] == 12 and w["psnr"]["n_zero_differences"] == 1
    assert w["ssim"]["n_zero_differences"] == 2
    # Identical values: no evidence, p = 1 (scipy would warn and divide 0 by 0).
    assert w["vif"]["p"] == 1.0


def test_pairs_match_by_key_not_by_row_order():
    table = _table({"ae": {"ssim": AE_SSIM}, "linear": {"ssim": LIN_SSIM}})
    order = np.r_[np.arange(12), 12 + np.random.default_rng(0).permutation(12)]
    shuffled = ScoreTable({c: v[order] for c, v in table.columns.items()})
    p = stats.summarise(shuffled)["variants"]["dropped"]["wilcoxon"]["linear"]["ssim"]["p"]
    assert p == pytest.approx(scipy_stats.wilcoxon(AE_SSIM, LIN_SSIM, alternative="greater").pvalue)


def test_wilcoxon_drops_nan_pairs():
    ae, other = AE_SSIM.copy(), LIN_SSIM.copy()
    ae[0] = np.nan
    r = stats.wilcoxon_greater(ae, other)
    assert r["n_pairs"] == 11 and r["n_nan_left_out"] == 1
    assert r["p"] == pytest.approx(scipy_stats.wilcoxon(AE_SSIM[1:], LIN_SSIM[1:], alternative="greater").pvalue)


def test_winner_logic_including_autoencoder_losing():
    n = 12
    table = _table({
        "ae": {"ssim": AE_SSIM, "psnr": AE_PSNR, "vif": np.full(n, 0.5)},
        "linear": {"ssim": LIN_SSIM, "psnr": LIN_PSNR, "vif": np.full(n, 0.5)},
        "bspline": {"ssim": LIN_SSIM - 0.01, "psnr": LIN_PSNR - 2, "vif": np.full(n, 0.4)},
    })
    winners = stats.summarise(table)["variants"]["dropped"]["winners"]
    assert winners["ssim"]["best"] == ["ae"] and winners["ssim"]["reference_wins"]
    assert winners["ssim"]["best_other"] == "linear"
    assert winners["psnr"]["best"] == ["linear"] and not winners["psnr"]["reference_wins"]
    assert winners["psnr"]["significant_vs_all"] is False
    assert winners["vif"]["best"] == ["ae", "linear"] and not winners["vif"]["reference_wins"]


def test_score_table_csv_round_trip(tmp_path):
    table = _table({"ae": {"ssim": AE_SSIM, "psnr": AE_PSNR}})
    table.write_csv(tmp_path / "s.csv")
    back = ScoreTable.read_csv(tmp_path / "s.csv")
    header = (tmp_path / "s.csv").read_text().splitlines()[0]
    assert header == "volume,frame,slice,method,variant,ssim,psnr,vif"
    np.testing.assert_array_equal(back["psnr"], AE_PSNR)
    assert np.isnan(back["vif"]).all()
    assert back["slice"].dtype == np.int64 and list(back["method"]) == ["ae"] * 12


def test_metrics_get_the_original_as_reference():
    stack = linear_volume(nz=5, nt=1)
    calls = []

    def recording(reference, test):
        calls.append((reference.copy(), test.copy()))
        return psnr_standin(reference, test)

    def half(kept, positions):
        return np.full(kept.shape[:2] + (len(positions), kept.shape[3]), 0.5, np.float32)

    evaluate.evaluate_stack(stack, {"half": half}, {"psnr": recording})
    reference, test = calls[0]
    np.testing.assert_allclose(reference[:5, ..., 0], np.transpose(stack[..., 0], (2, 0, 1)))
    assert np.all(test == 0.5)


def test_score_images_padding_does_not_change_scores():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(11, 8, 8, 1)).astype(np.float32)
    b = rng.uniform(size=(11, 8, 8, 1)).astype(np.float32)
    sizes = []

    def recording(x, y):
        sizes.append(x.shape[0])
        return psnr_standin(x, y)

    out = score_images(a, b, {"psnr": recording}, chunk=8)
    np.testing.assert_allclose(out["psnr"], psnr_standin(a, b))
    assert sizes == [8, 8]  # 8 images, then 3 padded to 8
    assert [_bucket(m) for m in (1, 9, 32, 33, 250)] == [8, 16, 32, 64, 256]


# ----------------------------------------------------------------------------
# The command: outputs, refusal to overwrite, atomic replacement


@pytest.fixture
def patched_run(monkeypatch, tmp_path):
    """run_evaluation with stand-ins for the model, the split and the metrics."""
    from jaxsr.configs import default
    from jaxsr.train import checkpoint as checkpoint_lib

    data = np.zeros((24, 24, 6, 2), np.float32)
    data[4:20, 4:20] = linear_volume(16, 16, 6, 2) * 100
    data[:3] = 100.0
    paths = []
    for i in range(2):
        path = tmp_path / f"patient{i}.nii.gz"
        nib.save(nib.Nifti1Image(data, np.diag([1.4, 1.4, 10.0, 1.0])), str(path))
        paths.append(path)
    config = default.get_config()
    config.model.num_blocks = 2
    monkeypatch.setattr(checkpoint_lib, "load_for_inference", lambda checkpoint: (object(), config))
    monkeypatch.setattr(evaluate, "list_volumes", lambda data_dir, split: paths)
    monkeypatch.setattr(evaluate, "autoencoder_method",
                        lambda interpolator, mix, fallback, residual_weight=1.0: {"latent": nearest_noisy_standin, "residual": linear_noisy_standin}[mix])
    monkeypatch.setattr(evaluate, "baseline_methods", lambda: {"linear": linear_standin})
    monkeypatch.setattr(evaluate, "default_metrics", lambda: METRICS)
    return tmp_path


def test_cli_writes_report_and_refuses_to_overwrite(patched_run, capsys):
    from jaxsr import cli

    out = patched_run / "report"
    argv = ["evaluate", "--checkpoint", str(patched_run), "--data", str(patched_run), "--out", str(out), "--crop-size", "16"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| Linear |" in printed and "Linear interpolation beat the autoencoder in PSNR" in printed
    for name in ("scores.csv", "summary.json", "index.html", "figures/boxplots_dropped.png", "figures/through_plane.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["counts"]["slices_scored"] == 2 * 2 * 2  # 2 volumes x 2 frames x slices 1, 3
    assert summary["settings"]["counts"]["slices_skipped_no_neighbour"] == 4  # slice 5 of each frame
    assert summary["variants"]["dropped"]["winners"]["psnr"]["best"] == ["linear"]
    # The residual mix is a method of its own, ranked with the others.
    assert list(summary["variants"]["dropped"]["methods"]) == ["ae", "ae_residual", "linear"]
    assert set(summary["variants"]["dropped"]["wilcoxon"]) == {"ae_residual", "linear"}
    assert "| AE + residuals |" in printed
    assert set(np.unique(ScoreTable.read_csv(out / "scores.csv")["method"])) == {"ae", "ae_residual", "linear"}

    before = (out / "scores.csv").stat().st_mtime_ns
    assert cli.main(argv) != 0  # non-empty OUT without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "scores.csv").stat().st_mtime_ns == before
    assert cli.main(argv + ["--overwrite", "--max-volumes", "1"]) == 0
    assert json.loads((out / "summary.json").read_text())["settings"]["counts"]["volumes"] == 1
    assert not [p for p in patched_run.iterdir() if "jaxsr-tmp" in p.name or ".old-" in p.name]


def test_crash_leaves_no_half_report(patched_run, monkeypatch):
    from jaxsr import report

    def boom(*args, **kwargs):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(report, "write_report", boom)
    out = patched_run / "report"
    with pytest.raises(RuntimeError):
        evaluate.run_evaluation(patched_run, patched_run, out, crop_size=16)
    assert not out.exists()
    assert not [p for p in patched_run.iterdir() if "jaxsr-tmp" in p.name]


class _IdentityAutoencoder:
    """Latent = image: latent interpolation then IS linear interpolation, a known answer."""

    def encode(self, x):
        return x

    def decode(self, z):
        return z


def test_real_modules_identity_autoencoder_equals_linear():
    """The wiring with jaxsr.interpolate, jaxsr.baselines and jaxsr.metrics (VIF needs >= 41 px)."""
    pytest.importorskip("jaxsr.metrics")
    pytest.importorskip("jaxsr.baselines")
    from jaxsr.interpolate import LatentInterpolator

    stack = linear_volume(nx=48, ny=48, nz=5, nt=2) + 0.05 * np.random.default_rng(3).uniform(size=(48, 48, 5, 2)).astype(np.float32)
    methods = {"ae": evaluate.autoencoder_method(LatentInterpolator(_IdentityAutoencoder())), **evaluate.baseline_methods(("linear", "bspline"))}
    scores = evaluate.evaluate_stack(stack, methods, evaluate.default_metrics()).scores
    ae, lin = scores.select(method="ae"), scores.select(method="linear")
    np.testing.assert_allclose(ae["ssim"], lin["ssim"], atol=1e-5)
    np.testing.assert_allclose(ae["vif"], lin["vif"], atol=1e-4)
    dropped = scores.select(variant="dropped", method="bspline")
    assert np.all(dropped["ssim"] < 1) and np.all(np.isfinite(dropped["vif"]))


def test_real_modules_residual_mix_of_an_identity_autoencoder_is_linear():
    """D(z_a) = (1-a)·D(z_n) + a·D(z_{n+1}) for the identity: the residual mix is linear interpolation, and at the
    kept slices the originals themselves (a perfect score, like the baselines')."""
    from jaxsr.interpolate import LatentInterpolator

    stack = linear_volume(nx=16, ny=12, nz=7, nt=2) + 0.05 * np.random.default_rng(4).uniform(size=(16, 12, 7, 2)).astype(np.float32)
    methods = {**evaluate.autoencoder_methods(LatentInterpolator(_IdentityAutoencoder())), "linear": linear_standin}
    assert list(methods) == ["ae", "ae_residual", "linear"]
    result = evaluate.evaluate_stack(stack, methods, METRICS)
    # Rounding of the mix and of the blend, on values <= 1.
    np.testing.assert_allclose(result.outputs["ae_residual"], result.outputs["linear"], rtol=0, atol=1e-6)
    kept = result.scores.select(method="ae_residual", variant="all")
    assert np.all(np.isposinf(kept["psnr"][kept["slice"] % 2 == 0]))


def test_exact_copies_are_scored_once_with_the_same_result():
    stack = linear_volume(nz=7, nt=2)
    seen = []

    def counting(reference, test):
        differs = np.any(reference != reference[:1], axis=(1, 2, 3)) | np.any(test != test[:1], axis=(1, 2, 3))
        real = 1 + int(np.sum(differs))  # padding repeats row 0
        seen.append(real)
        return vif_standin(reference, test) + np.mean(test, axis=(1, 2, 3))  # finite, depends on both

    methods = {"ae": nearest_noisy_standin, "linear": linear_standin, "copy_linear": linear_standin}
    scores = evaluate.evaluate_stack(stack, methods, {"psnr": counting}).scores
    a, b = scores.select(method="linear"), scores.select(method="copy_linear")
    np.testing.assert_array_equal(a["psnr"], b["psnr"])
    kept = a.select(variant="all")
    # ae: 7 slices x 2 frames; linear and its copy: 3 dropped x 2 frames each; the 4 x 2 kept originals once.
    assert sum(seen) == 14 + 2 * 6 + 8
    # The reused numbers are those of scoring the original against itself.
    originals = np.transpose(stack[:, :, ::2], (3, 2, 0, 1)).reshape(-1, 16, 12, 1)
    kept_rows = kept.select()  # rows of slices 0, 2, 4, 6 per frame, frame-major
    mask = kept_rows["slice"] % 2 == 0
    np.testing.assert_allclose(kept_rows["psnr"][mask], counting(originals, originals))
