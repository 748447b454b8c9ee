"""``--set key=value``: one parser for every command line and batch file that changes a configuration.

* :func:`typed` reads a value for a field of a given type: text from a command line (``epochs=1``, ``lr=2e-5``,
  ``augment=false``, ``weights=none``, ``seeds=0,1`` or ``seeds=[0, 1]``, ``extra={"a": 1}``) or a value already
  read from YAML (``set: {epochs: 1, seeds: [0]}`` in a ``sets.yml`` entry).  ``python -m osdpm_lib.train --set``
  (:func:`osdpm_lib.train_cli.set_value`) and ``python -m osdpm_lib.runner --set`` both read through it.
* :func:`parse` checks a set of overrides of a chain's profile (a ``TrainConfig`` field, ``seeds``, a data-size key
  of :data:`osdpm_lib.profiles.DATA_FIELDS`; ``baselines.<key>`` for notebook 08's baseline profile) and types them;
  an unknown key is an error naming the key and the profile.
* :func:`apply` registers the profile with its overrides under a name of its own (``finetune.smoke``,
  ``finetune.set-1a2b3c4d``) in both profile tables, and returns that name: every notebook calls it on its
  ``profile`` and ``overrides`` parameters, so the library's functions that take a profile name need nothing else.
* :func:`chain_name`: the runner's chain with overrides gets the same suffix, so its data, runs and results folders
  are its own: a smoke run never reuses nor overwrites a full one.
* :data:`SMOKE` (``--smoke``): the smallest meaningful chain, 1 seed, 1 epoch, batch 16, the baselines 1 epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing

import yaml

BASELINES = "baselines."            # prefix of a baseline-profile key (notebook 08)
RESERVED = {"variant": "the ablation rows are the chain's", "seed": "use seeds", "system": "use baselines.systems"}
SMOKE: dict = {"seeds": [0], "epochs": 1, "batch_size": 16,
               "baselines.seeds": [0], "baselines.epochs": 1, "baselines.batch_size": 16}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
_NONE = ("none", "null", "")


class UsageError(ValueError):
    """A bad command-line option or override."""


def split(item: str, flag: str = "--set") -> tuple[str, str]:
    """``"key=value"`` -> ``("key", "value")``."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"{flag} {item!r}: expected KEY=VALUE, e.g. {flag} epochs=10")
    return key, raw


def _type_name(hint) -> str:
    return getattr(hint, "__name__", None) if not typing.get_args(hint) else str(hint).replace("typing.", "")


def _convert(value, hint):
    """``value`` (text or a YAML value) as ``hint``; ``ValueError`` when it is not one."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (value is None or isinstance(value, str) and value.strip().lower() in _NONE):
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (list, tuple):
        if isinstance(value, str):
            text = value.strip()
            if text[:1] + text[-1:] in ("[]", "()"):
                value = yaml.safe_load(f"[{text[1:-1]}]")
            else:
                value = [v.strip() for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"not a list: {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ValueError(f"expected {len(args)} values, got {len(value)}")
            return tuple(_convert(v, a) for v, a in zip(value, args))
        item = args[0] if args else str
        return origin(_convert(v, item) for v in value)
    if hint is dict or dataclasses.is_dataclass(hint):      # a JSON/YAML object (a dataclass's fields)
        if isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if str(value).strip().lower() not in _TRUE + _FALSE:
            raise ValueError(f"not one of {_TRUE + _FALSE}")
        return str(value).strip().lower() in _TRUE
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ValueError(f"not a number: {value!r}")
        number = hint(value.strip()) if isinstance(value, str) else value
        if hint is int and number != int(number):
            raise ValueError(f"not an integer: {value!r}")
        return hint(number)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"not text: {value!r}")
        return value
    raise ValueError(f"no reader for {hint}")


def typed(key: str, value, hint, flag: str = "--set"):
    """``value`` read as a field of type ``hint``: ``none`` for an optional one, ``true``/``false`` for a flag, a
    comma-separated or bracketed list for a list or tuple, JSON for a mapping; :class:`UsageError` otherwise."""
    try:
        return _convert(value, hint)
    except (ValueError, TypeError, OverflowError, yaml.YAMLError) as exc:
        raise UsageError(f"{flag} {key}={value}: {key} takes {_type_name(hint)} ({exc})") from None


def train_fields() -> dict:
    """``{field: type}`` of :class:`osdpm_lib.train.TrainConfig`."""
    from .train import TrainConfig

    return typing.get_type_hints(TrainConfig)


def profile_fields() -> dict:
    """The keys a chain profile may set and their types: the ``TrainConfig`` fields and the data keys."""
    from .profiles import DATA_FIELDS

    return train_fields() | DATA_FIELDS


def baseline_fields() -> dict:
    """The keys a baseline profile may set: the ``BaselineConfig`` fields, ``systems`` and ``seeds``."""
    from .baselines.profiles import BaselineConfig

    return typing.get_type_hints(BaselineConfig) | {"systems": list[str], "seeds": list[int]}


def parse(items: list[str] | dict, profile: str, flag: str = "--set") -> dict:
    """Overrides of profile ``profile`` from ``KEY=VALUE`` texts or a mapping (``sets.yml``), typed: ``{key: value}``
    with ``baselines.<key>`` for the baseline profile.  A later item wins over an earlier one."""
    pairs = items.items() if isinstance(items, dict) else (split(i, flag) for i in items)
    out = {}
    for key, value in pairs:
        key = str(key).strip()
        own = key.removeprefix(BASELINES)
        fields, which = ((baseline_fields(), f"baseline profile {profile!r}") if key.startswith(BASELINES)
                         else (profile_fields(), f"profile {profile!r}"))
        if own in RESERVED:
            raise UsageError(f"{flag} {key}=...: {key!r} cannot be set in {which} ({RESERVED[own]})")
        if own not in fields:
            raise UsageError(f"{flag} {key}=...: {key!r} is not a key of {which}; keys: {', '.join(sorted(set(fields) - set(RESERVED)))}"
                             + ("" if key.startswith(BASELINES) else f", and baselines.<key> for notebook 08"))
        out[key] = typed(key, value, fields[own], flag)
    return out


def tag(overrides: dict) -> str:
    """The suffix of a profile or chain with these overrides: ``""`` without any, ``smoke`` for :data:`SMOKE`,
    else ``set-`` and a hash of the overrides."""
    if not overrides:
        return ""
    if _canonical(overrides) == _canonical(SMOKE):
        return "smoke"
    return "set-" + hashlib.sha1(_canonical(overrides).encode()).hexdigest()[:8]


def _canonical(overrides: dict) -> str:
    return json.dumps(overrides, sort_keys=True, default=list)


def chain_name(name: str, overrides: dict | None) -> str:
    """``name`` with the overrides' :func:`tag`: the chain's own ``data/``, ``runs/`` and ``results/`` folders."""
    return f"{name}.{tag(overrides)}" if overrides else name


def apply(profile: str, overrides: dict | None) -> str:
    """Register ``profile`` with ``overrides`` (read by :func:`parse`) in the chain's and the baselines' profile
    tables and return its name (``profile`` itself without overrides).  Checked at once: a value the configuration
    refuses raises here, before any run."""
    from . import profiles
    from .baselines import profiles as baseline_profiles

    if not overrides:
        return profile
    overrides = parse(overrides, profile)
    name = f"{profile}.{tag(overrides)}"
    chain = {k: v for k, v in overrides.items() if not k.startswith(BASELINES)}
    base = {k.removeprefix(BASELINES): v for k, v in overrides.items() if k.startswith(BASELINES)}
    profiles.PROFILES[name] = profiles.get(profile) | chain
    baseline_profiles.BASELINE_PROFILES[name] = baseline_profiles.baseline_profile(profile) | base
    try:
        profiles.train_config(name)
        for system in baseline_profiles.BASELINE_PROFILES[name]["systems"]:
            baseline_profiles.baseline_config(name, system)
    except (ValueError, TypeError) as exc:
        del profiles.PROFILES[name], baseline_profiles.BASELINE_PROFILES[name]
        raise UsageError(f"profile {profile!r} with {overrides}: {exc}") from None
    return name
