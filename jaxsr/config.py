"""Python configs: configs/NAME.py:get_config() with `--config.a.b=value` overrides."""

from __future__ import annotations

import ast
import importlib.util
import json
import pathlib

import ml_collections

from jaxsr.errors import ConfigError


def load_config(path: str | pathlib.Path, overrides: list[str] | tuple[str, ...] = ()) -> ml_collections.ConfigDict:
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    spec = importlib.util.spec_from_file_location(f"jaxsr_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        config = module.get_config()
    except Exception as e:  # a config file is user code: report it as a config error
        raise ConfigError(f"{path}: could not load config ({type(e).__name__}: {e})") from None
    for item in overrides:
        apply_override(config, item)
    return config


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
        if isinstance(current, bool):
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
    return ml_collections.ConfigDict(json.loads(text))


# Checked before anything is written, so a typo costs seconds, not a failed job hours in.
_POSITIVE_INTS = ("train.steps", "train.batch_size", "train.eval_every", "train.checkpoint_every", "train.log_every",
                  "train.keep_checkpoints", "train.eval_batches", "data.crop_size", "model.num_blocks",
                  "model.base_features", "model.bottleneck_features", "model.latent_features")
_CHOICES = {"model.dtype": ("float32", "bfloat16"), "data.loader": ("numpy", "tfdata"),
            "optim.schedule": ("constant", "cosine")}


def _get(config, dotted: str):
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first setting whose value cannot work."""
    for key in _POSITIVE_INTS:
        value = _get(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"--config.{key}={value!r}: expected a positive integer")
    for key, choices in _CHOICES.items():
        try:
            value = _get(config, key)
        except KeyError:
            continue
        if value not in choices:
            raise ConfigError(f"--config.{key}={value!r}: expected one of {', '.join(choices)}")
    lr = config.optim.learning_rate
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise ConfigError(f"--config.optim.learning_rate={lr!r}: expected a positive number")
    scale = 2 ** config.model.num_blocks
    if config.data.crop_size % scale:
        raise ConfigError(f"--config.data.crop_size={config.data.crop_size}: must be a multiple of 2**model.num_blocks = {scale}")
    lo, hi = config.data.get("gamma_range", (1.0, 1.0))
    if not 0 < lo <= hi:
        raise ConfigError(f"--config.data.gamma_range={(lo, hi)!r}: expected 0 < low <= high")
    for key in ("warmup_steps", "clip_norm"):
        if config.optim.get(key, 0) < 0:
            raise ConfigError(f"--config.optim.{key}={config.optim[key]!r}: must not be negative")
