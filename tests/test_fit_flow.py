""""I have scans and no model": fit on every volume of the archive (--split all-train), then reprocess it.

The README's two commands, run as a user runs them, on three small volumes
with the tiny config at native in-plane spacing. The split itself is tested
in test_datasets (test_all_train_split_holds_every_volume_in_training).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxsr import cli, outputs
from jaxsr.io import nifti
from tests.test_bad_inputs import good_volume


@pytest.mark.slow  # about a minute on 2 shared cores: two compilations (train, reprocess)
def test_fit_on_the_archive_then_reprocess_it(tmp_path, capsys):
    archive, workdir, out = tmp_path / "scans", tmp_path / "fit", tmp_path / "upsampled"
    names = ["a.nii.gz", "b.nii.gz", "sub/c.nii.gz"]
    for name in names:
        good_volume(archive / name)
    assert cli.main(["train", "--config", "tiny", "--workdir", str(workdir), "--data", str(archive), "--split", "all-train",
                     "--no-progress", "--config.train.steps=2", "--config.data.target_spacing_mm=native"]) == 0
    assert "jaxsr train: done; in-sample validation reconstruction PSNR" in capsys.readouterr().out
    split = json.loads((workdir / "split.json").read_text())
    assert split["kind"] == "all-train" and split["train"] == sorted(names) and split["test"] == []
    assert split["validation"] == ["a.nii.gz"]  # every 5th, the first included: in-sample
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert any("val/recon_mse" in r for r in records)

    assert cli.main(["reprocess", str(archive), str(out), "--checkpoint", str(workdir), "--factor", "2", "--no-progress"]) == 0
    for name in names:
        source, result = nifti.load(archive / name), nifti.load(out / name)
        assert result.data.shape == (40, 36, 11, 3)
        np.testing.assert_array_equal(result.affine[:, :2], source.affine[:, :2])  # native: the source's in-plane grid
        np.testing.assert_array_equal(result.data[:, :, ::2], source.data)  # acquired slices as acquired
    sidecar = json.loads(outputs.sidecar_path(out / "a.nii.gz").read_text())
    assert sidecar["config"]["data"]["target_spacing_mm"] == "native"
    assert sidecar["model_inplane_spacing"] == "native (1.5 x 1.5 mm)"
    assert sidecar["output"]["spacing_mm"][:2] == sidecar["source"]["spacing_mm"][:2] == [1.5, 1.5]


def test_all_train_validates_on_training_volumes_preprocessed_once(tmp_path):
    from jaxsr.config import load_config
    from jaxsr.train import loop

    archive = tmp_path / "scans"
    for i in range(7):
        good_volume(archive / f"v{i}.nii.gz")
    config = load_config("tiny", ["--config.data.target_spacing_mm=native"])
    stacks, val_stacks, split, _ = loop._load_data(config, tmp_path / "fit", archive, None, None, None, "all-train")
    assert len(stacks) == 7 and split["train"] == [f"v{i}.nii.gz" for i in range(7)]
    assert split["validation"] == ["v0.nii.gz", "v5.nii.gz"]
    # The same arrays as the training stacks of those volumes: in-sample, nothing read twice.
    assert [v is stacks[i] for v, i in zip(val_stacks, (0, 5))] == [True, True]
    assert stacks[0].shape == (40, 36, 6, 3)  # native: the source's matrix
