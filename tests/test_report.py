"""The report: verdict sentences (the autoencoder losing too), text tables, figure files, index.html."""

import json
import re

import numpy as np
import pytest
from matplotlib import image as mpimg

from jaxsr import evaluate, figures, report, stats
from tests.test_evaluate import METRICS, _table, linear_standin, linear_volume, nearest_noisy_standin

rng = np.random.default_rng(0)
BASE = rng.uniform(0.80, 0.90, 30)
PSNR = rng.uniform(28.0, 34.0, 30)


def _summary(ae: dict, **others: dict) -> dict:
    return stats.summarise(_table({"ae": ae, **others}))


def test_sentence_when_autoencoder_loses():
    s = _summary({"ssim": BASE, "psnr": PSNR - 0.4, "vif": BASE}, linear={"ssim": BASE - 0.01, "psnr": PSNR, "vif": BASE})
    text = report.verdicts(s)["psnr"]
    expected = f"Linear interpolation beat the autoencoder in PSNR (median {np.median(PSNR):.2f} vs {np.median(PSNR - 0.4):.2f} dB)."
    assert text == expected
    assert report.verdicts(s)["vif"].startswith("The autoencoder tied with linear interpolation in VIF")


def test_sentence_when_autoencoder_wins_significantly_or_not():
    s = _summary({"ssim": BASE + 0.01}, linear={"ssim": BASE}, lanczos={"ssim": BASE - 0.02})
    text = report.verdicts(s)["ssim"]
    assert text.startswith(f"The autoencoder won in SSIM (median {np.median(BASE + 0.01):.4f} vs {np.median(BASE):.4f} "
                           "for linear interpolation, the best of the others)")
    assert "p < 0.001 against every other method" in text
    # A higher median but a coin-flip sign pattern: the sentence must say it is not significant.
    noisy = BASE + np.where(np.arange(30) % 2 == 0, 0.02, -0.015)
    s = _summary({"ssim": noisy}, bspline={"ssim": BASE})
    text = report.verdicts(s)["ssim"]
    assert "won in SSIM" in text and "not significant at p < 0.001 over B-spline interpolation (p = " in text


def test_summary_table_lists_methods_medians_and_p_values():
    s = _summary({"ssim": BASE, "psnr": PSNR, "vif": BASE}, linear={"ssim": BASE - 0.01, "psnr": PSNR + 1, "vif": BASE})
    text = report.summary_table(s)
    ae_row = next(line for line in text.splitlines() if line.startswith("| Autoencoder |"))
    assert f"{np.median(BASE):.4f} [{np.percentile(BASE, 25):.4f}, {np.percentile(BASE, 75):.4f}]" in ae_row
    p = s["variants"]["dropped"]["wilcoxon"]["linear"]["ssim"]["p"]
    assert re.search(rf"\| Linear \| {re.escape(report.format_p(p))} \(30\) \|", text)
    assert "Linear interpolation beat the autoencoder in PSNR" in text


def _copying_baseline_run(tmp_path):
    """Dropped slices: a near-oracle autoencoder beats linear interpolation. All slices: linear returns
    the acquired slices unchanged (PSNR +inf, capped), so its medians there exceed the autoencoder's."""
    stack = np.random.default_rng(5).uniform(0.1, 0.9, size=(32, 32, 7, 2)).astype(np.float32)

    def near_oracle(kept, positions):
        covered = np.round(np.asarray(positions) * 2).astype(int)
        noise = np.random.default_rng(6).normal(0, 0.01, stack[:, :, covered].shape)
        return np.clip(stack[:, :, covered] + noise, 0, 1)

    methods = {"ae": near_oracle, "linear": linear_standin}
    result = evaluate.evaluate_stack(stack, methods, METRICS, name="vol.nii.gz")
    evaluation = evaluate.Evaluation(result.scores, [evaluate.qualitative_example(result)], None, {"volumes": 1}, {})
    summary = stats.summarise(result.scores)
    report.write_outputs(tmp_path, evaluation, summary)
    return summary


def test_all_slices_appendix_never_ranks_a_baseline_that_returns_the_acquired_slices(tmp_path):
    summary = _copying_baseline_run(tmp_path)
    appendix = summary["variants"]["all"]
    # The premise: ranked by medians, the copying baseline would "win" the all-slices variant ...
    assert all(appendix["winners"][m]["best"] == ["linear"] for m in ("ssim", "psnr", "vif"))
    assert appendix["n_identical"] == {"ae": 0, "linear": 4 * 2}  # kept slices 0, 2, 4, 6 of 2 frames
    # ... while the verdict (dropped slices) is the autoencoder's.
    assert all(w["reference_wins"] for w in summary["variants"]["dropped"]["winners"].values())

    sentences = report.verdicts(summary, "all")
    assert set(sentences) == {"ssim", "psnr", "vif"}
    for text in sentences.values():
        assert not re.search(r"\b(beat|won|wins|tied|better)\b", text), text
        assert "linear interpolation 8 of 14" in text and "no verdict" in text
    printed = report.summary_table(summary)
    html_text = (tmp_path / "index.html").read_text()
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["variants"]["all"]["verdicts"] == sentences
    for text in (printed, html_text):
        assert "beat" not in text and text.count("won in") == 3  # the three primary verdicts only
        appendix_part = text[text.index("Appendix: all slices"):]
        assert "won in" not in appendix_part and "Wilcoxon" not in appendix_part
        assert "8 of 14" in appendix_part  # the table says how many slices came back unchanged
    assert "Appendix: all slices (paper-compatible variant), n = 14 slices per method" in printed


def test_through_plane_extent_is_physical():
    # 5 acquired slices 10 mm apart, 20 columns of 1.4 mm: 50 mm tall, 28 mm wide, slice 0 centred at z = 0.
    left, right, bottom, top = figures.through_plane_extent(np.arange(5), 20, 1.4, 10.0)
    assert (right - left, bottom - top, top) == pytest.approx((28.0, 50.0, -5.0))
    # x4 upsampling of the same stack: 17 rows 2.5 mm apart, centred on the same slices.
    left, right, bottom, top = figures.through_plane_extent(np.arange(17) / 4, 20, 1.4, 10.0)
    assert (bottom - top, top) == pytest.approx((42.5, -1.25))


@pytest.fixture(scope="module")
def written_report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    stack = linear_volume(nx=32, ny=32, nz=7, nt=2)
    methods = {"ae": nearest_noisy_standin, "linear": linear_standin}
    result = evaluate.evaluate_stack(stack, methods, METRICS, name="vol.nii.gz")
    tp = evaluate.through_plane_example(stack, methods, name="vol.nii.gz", inplane_mm=1.4, slice_mm=10.0, factor=3)
    evaluation = evaluate.Evaluation(result.scores, [evaluate.qualitative_example(result)], tp, {"volumes": 1}, {})
    summary = stats.summarise(result.scores)
    summary["settings"] = {"checkpoint": "/ckpt", "split": "test", "crop": "32x32", "counts": {"volumes": 1}}
    report.write_outputs(folder, evaluation, summary)
    return folder


@pytest.mark.parametrize("name, size_px", [
    ("boxplots_dropped.png", figures.BOXPLOT_PX),
    ("boxplots_all.png", figures.BOXPLOT_PX),
    ("qualitative_0.png", figures.qualitative_size_px(2)),
    ("through_plane.png", figures.THROUGH_PLANE_PX),
])
def test_figures_are_nonempty_images_of_expected_size(written_report, name, size_px):
    image = mpimg.imread(written_report / "figures" / name)
    assert image.shape[:2] == (size_px[1], size_px[0])
    rgb = image[..., :3]
    assert rgb.std() > 0.05  # not a blank canvas
    assert (rgb.min(axis=-1) < 0.5).mean() > 0.01  # some dark pixels: drawn content


def test_index_html_has_tables_sentences_and_relative_images(written_report):
    text = (written_report / "index.html").read_text()
    assert "<table>" in text and "<td>Autoencoder</td>" in text and "<td>Linear</td>" in text
    assert "Linear interpolation beat the autoencoder in PSNR" in text
    assert "paper-compatible" in text and "/ckpt" in text
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) == 4
    for src in sources:
        assert not src.startswith("/") and (written_report / src).is_file()
    summary = json.loads((written_report / "summary.json").read_text())
    assert summary["variants"]["dropped"]["verdicts"]["psnr"].startswith("Linear interpolation beat")
