"""Configs: one base with every default, named configs from the package, paths, strict keys."""

import json
import pathlib
import re

import pytest

from jaxsr import config as config_lib
from jaxsr.configs import default
from jaxsr.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMED = ["acdc_followup", "acdc_paper", "default", "phantom_demo", "real_mri", "tiny"]


def leaves(config) -> dict:
    flat = {}
    for key, value in config.items():
        if hasattr(value, "items"):
            flat.update({f"{key}.{k}": v for k, v in leaves(value).items()})
        else:
            flat[key] = value
    return flat


def test_named_configs_are_the_files_in_configs():
    assert config_lib.named_configs() == NAMED
    assert sorted(p.stem for p in (REPO / "configs").glob("*.py") if not p.stem.startswith("_")) == NAMED


@pytest.mark.parametrize("name", NAMED)
def test_every_named_config_has_the_base_keys_and_is_valid(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # names resolve from the package, not from the working folder
    config = config_lib.load_config(name)
    assert leaves(config).keys() == leaves(default.get_config()).keys()
    config_lib.validate(config)
    by_path = config_lib.load_config(REPO / "configs" / f"{name}.py")
    assert leaves(by_path) == leaves(config)


def test_variants_change_only_what_they_say():
    base = leaves(default.get_config())
    assert leaves(config_lib.load_config("acdc_paper")) == base
    tiny = leaves(config_lib.load_config("tiny"))
    changed = {k for k in base if tiny[k] != base[k]}
    assert "data.target_spacing_mm" not in changed and "data.gamma_range" not in changed
    assert {"model.base_features", "train.steps", "data.crop_size"} <= changed


def test_a_users_file_may_start_from_the_base(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("from jaxsr.configs import default\n\n"
                    "def get_config():\n    c = default.get_config()\n    c.train.steps = 7\n    return c\n")
    config = config_lib.load_config(path, ["--config.data.crop_size=64"])
    assert config.train.steps == 7 and config.data.crop_size == 64
    assert config.data.gamma_range == default.get_config().data.gamma_range


def test_unknown_name_lists_the_named_configs():
    with pytest.raises(ConfigError, match=r"acdc_folowup: no such named config \(named: acdc_followup, acdc_paper"):
        config_lib.load_config("acdc_folowup")
    with pytest.raises(ConfigError, match="no such config file"):
        config_lib.load_config("configs/nope.py")


@pytest.mark.parametrize("body, message", [
    ("c = default.get_config()\n    del c.data['loader']", r"mine.py: missing data.loader; start from jaxsr.configs.default"),
    ("c = default.get_config()\n    c.train.stepz = 3", r"mine.py: unknown key train.stepz "),
    ("c = ml_collections.ConfigDict({'seed': 1})", r"mine.py: missing data.crop_size, data.gamma_range, data.intensity_aug, data.loader "
                                                  rf"and {len(config_lib._leaf_keys(default.get_config())) - 5} more; "),
    ("c = {}", r"mine.py: get_config\(\) returned dict, not an ml_collections.ConfigDict"),
    ("raise RuntimeError('two\\nlines')", r"mine.py: could not load config \(RuntimeError: two\)$"),
])
def test_a_bad_config_file_is_one_line_naming_it(tmp_path, body, message):
    path = tmp_path / "mine.py"
    path.write_text(f"import ml_collections\nfrom jaxsr.configs import default\n\ndef get_config():\n    {body}\n    return c\n")
    with pytest.raises(ConfigError, match=message) as info:
        config_lib.load_config(path)
    assert "\n" not in str(info.value)


def test_validate_refuses_a_config_built_without_the_base():
    config = config_lib.load_config("tiny")
    del config.model["batch_norm"]
    with pytest.raises(ConfigError, match="config: missing model.batch_norm"):
        config_lib.validate(config)
    for bad, message in [("--config.data.gamma_range=(1.5,0.7)", "expected \\(low, high\\) with 0 < low <= high"),
                         ("--config.data.gamma_range=(1.0,)", "gamma_range=\\(1.0,\\)"),
                         ("--config.optim.clip_norm=-1.0", "must not be negative"),
                         ("--config.inference.residual_weight=1.5", "residual_weight=1.5: expected a number in \\[0, 1\\]"),
                         ("--config.inference.tta=4", "inference.tta=4: expected one of 1, 8"),
                         ("--config.inference.mix=detail", "inference.mix='detail': expected one of latent, residual")]:
        with pytest.raises(ConfigError, match=message):
            config_lib.validate(config_lib.load_config("tiny", [bad]))


def test_a_saved_config_gets_the_defaults_of_keys_added_since():
    saved = json.loads(config_lib.to_json(config_lib.load_config("phantom_demo")))
    del saved["model"]["batch_norm"], saved["data"]["loader"]
    restored = config_lib.from_json(json.dumps(saved))
    assert restored.model.batch_norm is default.get_config().model.batch_norm
    assert restored.data.loader == default.get_config().data.loader
    assert restored.model.latent_features == 32 and list(restored.data.gamma_range) == [0.8, 1.25]
    with pytest.raises(ValueError, match="expected a JSON object"):
        config_lib.from_json("[1, 2]")


def test_no_module_repeats_a_default_with_get():
    # cfg.get("gamma_range", (0.7, 1.5)) is how two places came to disagree; read cfg.gamma_range.
    pattern = re.compile(r"\b\w*(cfg|config)(\.\w+)*\.get\(")
    hits = [f"{p.relative_to(REPO)}:{i}" for p in sorted((REPO / "jaxsr").rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
