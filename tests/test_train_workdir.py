"""A training workdir across versions and in logs: an older run's config is accepted, another model
is refused naming the key, and a non-terminal stderr gets plain progress lines."""

import json
import re

import pytest

from jaxsr.config import load_config, to_json
from jaxsr.errors import UserError
from jaxsr.train import loop
from tests.test_train import smooth_stacks


def test_older_workdir_is_accepted_other_model_refused_and_progress_is_one_line(tmp_path, capsys):
    stacks, val = smooth_stacks(seed=1), smooth_stacks(1, seed=2)
    config = load_config("tiny")
    # A run saved before model.batch_norm and data.loader existed: they read as the base defaults.
    saved = json.loads(to_json(config))
    del saved["model"]["batch_norm"], saved["data"]["loader"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loop.train(config, tmp_path, None, stacks=stacks, val_stacks=val)
    assert max(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == 4
    # pytest's captured stderr is not a terminal: one plain line at the end, no bar.
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(r"train: step 4/4 \(100%\), [0-9.]+ img/s, loss [0-9.e+-]+, took \d+s", err), err

    with pytest.raises(UserError, match=r"different model config \(model.latent_features: saved 8, now 4\)"):
        loop.train(load_config("tiny", ["--config.model.latent_features=4"]), tmp_path, None, stacks=stacks, val_stacks=val)
