"""The demo's quick mode end to end: every output exists and is well-formed."""

import json

import matplotlib.image
import nibabel as nib
import pytest

from jaxsr import demo
from jaxsr.errors import ConfigError, UserError


@pytest.mark.slow  # end to end: trains, upsamples, evaluates, writes the report
def test_quick_demo_writes_everything(tmp_path):
    out = tmp_path / "demo"
    result = demo.run_demo(out, quick=True)
    assert (out / "phantom" / "phantom.json").exists()
    assert (out / "train" / "config.json").exists() and (out / "train" / "metrics.jsonl").exists()
    summary = json.loads((result.report_dir / "summary.json").read_text())
    assert summary == result.summary
    html = (result.report_dir / "index.html").read_text()
    assert "Linear" in html and "Autoencoder" in html
    pngs = sorted((result.report_dir / "figures").glob("*.png"))
    assert pngs and all(matplotlib.image.imread(p).shape[0] > 100 for p in pngs)
    lines = (result.report_dir / "scores.csv").read_text().splitlines()
    assert lines[0].startswith("volume") and len(lines) > 10
    up = nib.load(str(result.upsampled))
    source = nib.load(str(json.loads(result.upsampled.with_name(result.upsampled.name + ".json").read_text())["source"]["path"]))
    assert up.shape[2] == 2 * source.shape[2] - 1 and up.shape[3] == source.shape[3]
    assert "Autoencoder" in result.summary_text
    # A second run reuses the dataset and the checkpoint instead of starting over.
    before = (out / "phantom" / "phantom.json").stat().st_mtime_ns
    again = demo.run_demo(out, quick=True)
    assert (out / "phantom" / "phantom.json").stat().st_mtime_ns == before
    assert again.seconds["train"] < result.seconds["train"]


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(UserError, match="not made by `jaxsr demo`"):
        demo.run_demo(tmp_path, quick=True, fresh=True)
    assert (tmp_path / "mine.txt").read_text() == "precious"


@pytest.mark.parametrize("config, overrides, message", [
    ("phantom_dmeo", [], "phantom_dmeo: no such named config"),
    (None, ["--config.train.steps=0"], "train.steps=0: expected a positive integer"),
])
def test_a_bad_config_fails_before_anything_is_written(tmp_path, config, overrides, message):
    with pytest.raises(ConfigError, match=message):
        demo.run_demo(tmp_path / "demo", quick=True, config=config, overrides=overrides)
    assert not (tmp_path / "demo").exists()
