"""loss.interp_ssim_max_gap_mm: the interpolation SSIM term only for training sets whose median slice gap is small enough."""

from __future__ import annotations

import json

import pytest

from jaxsr.config import load_config
from jaxsr.errors import ConfigError, UserError
from jaxsr.train import loop, loss_rule
from tests.test_bad_inputs import good_volume


def ssim_config(*overrides):
    return load_config("tiny", ["--config.loss.interp_ssim_weight=0.5", "--config.loss.interp_ssim_max_gap_mm=6",
                                "--config.data.target_spacing_mm=native", *overrides])


@pytest.mark.parametrize("gaps, on", [([4.0], True), ([6.0], True), ([6.01], False), ([8.0], False),
                                      ([4.0, 4.0, 10.0], True), ([4.0, 10.0, 10.0], False)])
def test_the_term_follows_the_median_gap(gaps, on):
    config = ssim_config()
    loss = loss_rule.for_training_set(config, gaps)
    assert float(loss.interp_ssim_weight) == (0.5 if on else 0.0)
    # Only that weight changes, and the user's config is left as asked.
    assert {k: v for k, v in loss.items() if k != "interp_ssim_weight"} == \
           {k: v for k, v in config.loss.items() if k != "interp_ssim_weight"}
    assert float(config.loss.interp_ssim_weight) == 0.5


def test_any_gap_and_a_zero_weight_need_no_gaps():
    assert float(loss_rule.for_training_set(ssim_config("--config.loss.interp_ssim_max_gap_mm=any"), None).interp_ssim_weight) == 0.5
    assert float(loss_rule.for_training_set(ssim_config("--config.loss.interp_ssim_weight=0.0"), None).interp_ssim_weight) == 0.0


def test_a_limit_without_gaps_is_a_user_error():
    with pytest.raises(UserError, match="interp_ssim_max_gap_mm needs the training volumes' slice spacing"):
        loss_rule.for_training_set(ssim_config(), None)


@pytest.mark.parametrize("value", ["0", "-2", "wide", "inf"])
def test_a_bad_limit_is_named(value):
    from jaxsr.config import validate

    with pytest.raises(ConfigError, match="interp_ssim_max_gap_mm"):
        validate(ssim_config(f"--config.loss.interp_ssim_max_gap_mm={value}"))


def test_real_mri_carries_the_rule():
    config = load_config("real_mri")
    assert float(config.loss.interp_ssim_weight) == 0.5 and float(config.loss.interp_ssim_max_gap_mm) == 5.0


@pytest.mark.parametrize("spacing, on", [(4.0, True), (8.0, False)])
def test_setup_reads_the_gaps_from_the_training_files(tmp_path, spacing, on):
    archive = tmp_path / "scans"
    for i in range(3):
        good_volume(archive / f"v{i}.nii.gz", spacing=spacing)
    run = loop.setup(ssim_config(), tmp_path / "run", archive, split_kind="all-train")
    assert float(run.loss.interp_ssim_weight) == (0.5 if on else 0.0)
    # The checkpoint keeps the config as asked; the decision is made again, the same, on resume.
    assert json.loads((tmp_path / "run" / "config.json").read_text())["loss"]["interp_ssim_weight"] == 0.5


def test_the_step_trains_with_the_resolved_loss(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    stack = rng.random((40, 36, 6, 2)).astype(np.float32)
    config = ssim_config("--config.train.steps=1", "--config.train.eval_every=1", "--config.train.checkpoint_every=1")
    for gap, on in ((8.0, False), (4.0, True)):
        workdir = tmp_path / f"gap{gap:g}"
        out = loop.train(config, workdir, None, stacks=[stack], val_stacks=[stack], slice_gaps_mm=[gap], show_progress=False)
        assert out["loss"]["interp_ssim_weight"] == (0.5 if on else 0.0)
        trained = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if "train/loss" in line]
        assert trained and all(("train/interp_ssim" in r) == on for r in trained)
