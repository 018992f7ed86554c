"""Python configs with `--config.a.b=value` overrides, as in the flax examples.

A config is the `get_config()` of a named module shipped in the package
(`acdc_followup` is jaxsr.configs.acdc_followup, from the repository's
configs/ folder) or of any .py file. `jaxsr.configs.default` defines every
key with its default, once; every config holds exactly its keys, so the code
reads them as `config.data.gamma_range` and no default is repeated anywhere.
"""

from __future__ import annotations

import ast
import importlib
import importlib.resources
import importlib.util
import json
import pathlib

import ml_collections

from jaxsr import mixes
from jaxsr.configs import default
from jaxsr.errors import ConfigError


def load_config(name_or_path: str | pathlib.Path, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    """The config named `name_or_path` (see `named_configs`) or defined in that .py file, with overrides."""
    config, where = _run_get_config(str(name_or_path))
    check_keys(config, where)
    for item in overrides:
        apply_override(config, item)
    return config


def named_configs() -> list[str]:
    """The names load_config resolves from the installed jaxsr.configs package."""
    files = importlib.resources.files("jaxsr.configs").iterdir()
    return sorted(f.name[: -len(".py")] for f in files if f.name.endswith(".py") and not f.name.startswith("_"))


def _run_get_config(spec: str) -> tuple[ml_collections.ConfigDict, str]:
    """(get_config()'s result, where it came from for messages); a path when `spec` looks like one."""
    if spec.endswith(".py") or "/" in spec or "\\" in spec:
        path = pathlib.Path(spec)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        where = str(path)
        module_spec = importlib.util.spec_from_file_location(f"jaxsr_config_{path.stem}", path)

        def get_config():
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            return module.get_config()
    else:
        names = named_configs()
        if spec not in names:
            raise ConfigError(f"--config {spec}: no such named config (named: {', '.join(names)}); or give a path to a .py file")
        where = f"jaxsr.configs.{spec}"

        def get_config():
            return importlib.import_module(where).get_config()
    try:
        config = get_config()
    except Exception as e:  # a config file is user code: report it as a config error
        first_line = (str(e).splitlines() or [""])[0]
        raise ConfigError(f"{where}: could not load config ({type(e).__name__}: {first_line})") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"{where}: get_config() returned {type(config).__name__}, not an ml_collections.ConfigDict")
    return config, where


def _leaf_keys(node, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        if isinstance(value, (ml_collections.ConfigDict, dict)):
            keys += _leaf_keys(value, f"{prefix}{key}.")
        else:
            keys.append(prefix + key)
    return keys


def check_keys(config: ml_collections.ConfigDict, where: str = "config") -> None:
    """Raises ConfigError unless `config` has exactly the keys of jaxsr.configs.default.

    A missing key would otherwise fail deep inside training; an unknown one (a
    typo such as train.step) would silently do nothing.
    """
    want, have = _leaf_keys(default.get_config()), set(_leaf_keys(config))
    missing = [k for k in want if k not in have]
    if missing:
        more = f" and {len(missing) - 4} more" if len(missing) > 4 else ""
        raise ConfigError(f"{where}: missing {', '.join(missing[:4])}{more}; start from jaxsr.configs.default "
                          "(`from jaxsr.configs import default`, then `c = default.get_config()`)")
    unknown = sorted(have - set(want))
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(unknown)} (jaxsr.configs.default has no such key)")


def apply_override(config: ml_collections.ConfigDict, item: str) -> None:
    """Applies one `--config.a.b=value`, checking the key exists and the type fits."""
    if not item.startswith("--config.") or "=" not in item:
        raise ConfigError(f"{item}: expected --config.KEY=VALUE")
    key, text = item[len("--config."):].split("=", 1)
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        if part not in node:
            raise ConfigError(f"--config.{key}: unknown key {part!r}")
        node = node[part]
    leaf = parts[-1]
    if leaf not in node:
        raise ConfigError(f"--config.{key}: unknown key {leaf!r}")
    current = node[leaf]
    value = _parse(text)
    try:
        if key in _NUMBER_OR_NAME:
            if text in _NUMBER_OR_NAME[key]:
                value = text
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError
            else:
                value = float(value)
        elif isinstance(current, bool):
            if not isinstance(value, bool):
                raise TypeError
        elif isinstance(current, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError
        elif isinstance(current, float):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError
            value = float(value)
        elif isinstance(current, str):
            value = text
        elif isinstance(current, (tuple, list)):
            if not isinstance(value, (tuple, list)):
                raise TypeError
            value = type(current)(value)
        node[leaf] = value
    except TypeError:
        kind = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}.get(
            type(current).__name__, f"a {type(current).__name__}")
        if key in _NUMBER_OR_NAME:
            kind = " or ".join(("a number",) + _NUMBER_OR_NAME[key])
        raise ConfigError(f"--config.{key}={text}: expected {kind}") from None


def _parse(text: str):
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=str)


def from_json(text: str) -> ml_collections.ConfigDict:
    """A config saved by to_json; keys that jaxsr.configs.default gained since then get their defaults.

    That is why a new key's default must be what the code did before the key existed.
    """
    saved = json.loads(text)
    if not isinstance(saved, dict):
        raise ValueError(f"expected a JSON object, found {type(saved).__name__}")
    return ml_collections.ConfigDict(_merge(default.get_config().to_dict(), saved))


def _merge(base: dict, saved: dict) -> dict:
    merged = dict(base)
    for key, value in saved.items():
        both_tables = isinstance(value, dict) and key in base and isinstance(base[key], dict)
        merged[key] = _merge(base[key], value) if both_tables else value
    return merged


# Checked before anything is written, so a typo costs seconds, not a failed job hours in.
_POSITIVE_INTS = ("train.steps", "train.batch_size", "train.eval_every", "train.checkpoint_every", "train.log_every",
                  "train.keep_checkpoints", "train.eval_batches", "data.crop_size", "model.num_blocks",
                  "model.base_features", "model.bottleneck_features", "model.latent_features")
_CHOICES = {"model.dtype": ("float32", "bfloat16"), "data.loader": ("auto", "device", "numpy", "tfdata"),
            "model.conv_impl": ("auto", "lax", "winograd2", "winograd4", "native"),
            "optim.schedule": ("constant", "cosine"), "inference.mix": mixes.MIXES, "inference.tta": mixes.TTA_CHOICES,
            "inference.fallback": (False, True)}


NATIVE = "native"
ANY_GAP = "any"
# Keys that take a number or one of these words (the default config declares them untyped).
_NUMBER_OR_NAME = {"data.target_spacing_mm": (NATIVE,), "loss.interp_ssim_max_gap_mm": (ANY_GAP,)}


def _millimetres_or_word(config: ml_collections.ConfigDict, key: str) -> float | None:
    """A key of _NUMBER_OR_NAME as the code takes it: a positive number of mm, or None for its word."""
    (word,) = _NUMBER_OR_NAME[key]
    value = _get(config, key)
    if value == word:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigError(f"--config.{key}={value!r}: expected a positive number of mm or {word}")
    return float(value)


def target_spacing(config: ml_collections.ConfigDict) -> float | None:
    """config.data.target_spacing_mm as preprocessing takes it: millimetres, or None for "native".

    The one reader of that key: "native" keeps every volume's own in-plane
    grid (jaxsr.data.preprocess), anything else must be a positive number.
    """
    return _millimetres_or_word(config, "data.target_spacing_mm")


def interp_ssim_max_gap(config: ml_collections.ConfigDict) -> float | None:
    """config.loss.interp_ssim_max_gap_mm as training takes it: millimetres, or None for "any" (no limit).

    The one reader of that key; jaxsr.train.gap_rule applies it to the training set's slice gaps.
    """
    return _millimetres_or_word(config, "loss.interp_ssim_max_gap_mm")


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first setting whose value cannot work."""
    check_keys(config)
    target_spacing(config)
    interp_ssim_max_gap(config)
    for key in _POSITIVE_INTS:
        value = _get(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"--config.{key}={value!r}: expected a positive integer")
    for key, choices in _CHOICES.items():
        value = _get(config, key)
        if value not in choices:
            raise ConfigError(f"--config.{key}={value!r}: expected one of {', '.join(map(str, choices))}")
    lr = config.optim.learning_rate
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ConfigError(f"--config.optim.learning_rate={lr!r}: expected a positive number")
    scale = 2 ** config.model.num_blocks
    if config.data.crop_size % scale:
        raise ConfigError(f"--config.data.crop_size={config.data.crop_size}: must be a multiple of 2**model.num_blocks = {scale}")
    gamma_range = tuple(config.data.gamma_range)
    if len(gamma_range) != 2 or not 0 < gamma_range[0] <= gamma_range[1]:
        raise ConfigError(f"--config.data.gamma_range={gamma_range!r}: expected (low, high) with 0 < low <= high")
    weight = config.inference.residual_weight
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 <= weight <= 1:
        raise ConfigError(f"--config.inference.residual_weight={weight!r}: expected a number in [0, 1]")
    wide_steps = config.train.wide_gap_steps
    if isinstance(wide_steps, bool) or not isinstance(wide_steps, int) or wide_steps < 0:
        raise ConfigError(f"--config.train.wide_gap_steps={wide_steps!r}: expected 0 (train.steps) or a positive integer")
    for key in ("warmup_steps", "clip_norm"):
        if config.optim[key] < 0:
            raise ConfigError(f"--config.optim.{key}={config.optim[key]!r}: must not be negative")
