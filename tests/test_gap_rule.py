"""jaxsr.train.gap_rule: at wide slice gaps (over loss.interp_ssim_max_gap_mm) no interpolation SSIM term, train.wide_gap_steps steps."""

from __future__ import annotations

import json

import pytest

from jaxsr.config import load_config
from jaxsr.errors import ConfigError, UserError
from jaxsr.train import gap_rule, loop
from tests.test_bad_inputs import good_volume


def ssim_config(*overrides):
    return load_config("tiny", ["--config.loss.interp_ssim_weight=0.5", "--config.loss.interp_ssim_max_gap_mm=6",
                                "--config.data.target_spacing_mm=native", *overrides])


@pytest.mark.parametrize("gaps, on", [([4.0], True), ([6.0], True), ([6.01], False), ([8.0], False),
                                      ([4.0, 4.0, 10.0], True), ([4.0, 10.0, 10.0], False)])
def test_the_term_follows_the_median_gap(gaps, on):
    config = ssim_config()
    trained = gap_rule.for_training_set(config, gaps)
    assert float(trained.loss.interp_ssim_weight) == (0.5 if on else 0.0)
    # Only that weight changes (wide_gap_steps is 0: the steps stay), and the user's config is left as asked.
    without = lambda c: {**c.to_dict(), "loss": {k: v for k, v in c.loss.items() if k != "interp_ssim_weight"}}
    assert without(trained) == without(config)
    assert float(config.loss.interp_ssim_weight) == 0.5


@pytest.mark.parametrize("gaps, steps", [([6.0], 40), ([8.0], 20), ([4.0, 8.0, 8.0], 20)])
def test_wide_gaps_train_wide_gap_steps(gaps, steps):
    config = ssim_config("--config.train.steps=40", "--config.train.wide_gap_steps=20")
    trained = gap_rule.for_training_set(config, gaps)
    assert int(trained.train.steps) == steps and int(config.train.steps) == 40
    # The steps follow the gap without the SSIM term too; the gaps are then still needed.
    no_ssim = ssim_config("--config.train.steps=40", "--config.train.wide_gap_steps=20", "--config.loss.interp_ssim_weight=0")
    assert int(gap_rule.for_training_set(no_ssim, gaps).train.steps) == steps
    with pytest.raises(UserError, match="slice spacing"):
        gap_rule.for_training_set(no_ssim, None)


def test_wide_gap_steps_is_checked():
    from jaxsr.config import validate

    for value in ("-1", "2.5"):
        with pytest.raises(ConfigError, match="wide_gap_steps"):
            validate(ssim_config(f"--config.train.wide_gap_steps={value}"))


def test_any_gap_and_a_zero_weight_need_no_gaps():
    assert float(gap_rule.for_training_set(ssim_config("--config.loss.interp_ssim_max_gap_mm=any"), None).loss.interp_ssim_weight) == 0.5
    assert float(gap_rule.for_training_set(ssim_config("--config.loss.interp_ssim_weight=0.0"), None).loss.interp_ssim_weight) == 0.0


def test_a_limit_without_gaps_is_a_user_error():
    with pytest.raises(UserError, match="interp_ssim_max_gap_mm needs the training volumes' slice spacing"):
        gap_rule.for_training_set(ssim_config(), None)


@pytest.mark.parametrize("value", ["0", "-2", "wide", "inf"])
def test_a_bad_limit_is_named(value):
    from jaxsr.config import validate

    with pytest.raises(ConfigError, match="interp_ssim_max_gap_mm"):
        validate(ssim_config(f"--config.loss.interp_ssim_max_gap_mm={value}"))


@pytest.mark.parametrize("gap, weight, steps", [(4.0, 0.5, 4000), (4.4, 0.5, 4000), (6.0, 0.0, 1000), (8.0, 0.0, 1000)])
def test_real_mri_carries_the_rule(gap, weight, steps):
    trained = gap_rule.for_training_set(load_config("real_mri"), [gap])
    assert float(trained.loss.interp_ssim_weight) == weight and int(trained.train.steps) == steps


@pytest.mark.parametrize("spacing, on", [(4.0, True), (8.0, False)])
def test_setup_reads_the_gaps_from_the_training_files(tmp_path, spacing, on):
    archive = tmp_path / "scans"
    for i in range(3):
        good_volume(archive / f"v{i}.nii.gz", spacing=spacing)
    run = loop.setup(ssim_config(), tmp_path / "run", archive, split_kind="all-train")
    assert float(run.config.loss.interp_ssim_weight) == (0.5 if on else 0.0)
    # The checkpoint keeps the config as asked; the decision is made again, the same, on resume.
    assert json.loads((tmp_path / "run" / "config.json").read_text())["loss"]["interp_ssim_weight"] == 0.5


def test_the_step_trains_with_the_resolved_loss(tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    stack = rng.random((40, 36, 6, 2)).astype(np.float32)
    config = ssim_config("--config.train.steps=2", "--config.train.wide_gap_steps=1", "--config.train.log_every=1",
                         "--config.train.eval_every=1", "--config.train.checkpoint_every=1")
    for gap, on, steps in ((8.0, False, 1), (4.0, True, 2)):
        workdir = tmp_path / f"gap{gap:g}"
        out = loop.train(config, workdir, None, stacks=[stack], val_stacks=[stack], slice_gaps_mm=[gap], show_progress=False)
        assert out["loss"]["interp_ssim_weight"] == (0.5 if on else 0.0) and out["steps"] == steps
        trained = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines() if "train/loss" in line]
        assert [r["step"] for r in trained] == list(range(1, steps + 1))
        assert all(("train/interp_ssim" in r) == on for r in trained)
        # The checkpoint keeps the config as asked; the run stopped at its resolved step count.
        assert json.loads((workdir / "config.json").read_text())["train"]["steps"] == 2
        assert max(int(d.name) for d in (workdir / "checkpoints").iterdir() if d.name.isdigit()) == steps
