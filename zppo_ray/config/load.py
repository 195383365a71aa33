"""Defaults <- YAML file <- dotted CLI overrides, then validation: `load_config`.

Why our own merge walker instead of a bare `OmegaConf.merge`: OmegaConf loses the key path inside lists of
structured items ("full_key: bogus" instead of "data.train[0].bogus") and warns on implicit conversions.
The walker follows the dataclass types, lets OmegaConf validate each leaf, and turns every failure into a
`ConfigError` naming the full key path and what is allowed there.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import logging
import os
import re
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from zppo_ray.algo.methods import METHODS
from zppo_ray.config.checks import validate
from zppo_ray.config.schema import ConfigError, RunConfig

log = logging.getLogger(__name__)


def _now(fmt: str = "%Y%m%d-%H%M%S") -> str:
    """`${now:FMT}`: the load time (cached per config, so every reference agrees)."""
    return datetime.datetime.now().strftime(fmt)


if not OmegaConf.has_resolver("now"):  # register_resolver is 2.4's name for register_new_resolver
    getattr(OmegaConf, "register_resolver", OmegaConf.register_new_resolver)("now", _now, use_cache=True)

def load_config(
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    *,
    available_gpus: int | None = None,
    check_paths: bool = False,
) -> RunConfig:
    """Structured defaults ← YAML file ← `key=value` overrides, then `validate`. Raises ConfigError."""
    node = OmegaConf.structured(RunConfig)
    touched: set[str] = set()
    if path is not None:
        _apply(node, RunConfig, _read_yaml(Path(path)), "", touched)
    for item in overrides:
        _apply(node, RunConfig, _parse_override(item), "", touched)
    try:
        _apply_algorithm_preset(node, touched)  # reads the user's algo keys: an interpolation may fail here
        for key in sorted(touched):  # the user's own keys first, so a bad interpolation is blamed on them
            OmegaConf.select(node, key, throw_on_missing=True)
        cfg = OmegaConf.to_object(node)
    except (OmegaConfBaseException, OverflowError) as e:  # OverflowError: an interpolated int too big for float
        raise ConfigError(_failed_key(e) or ", ".join(_interpolated(node, touched)) or "<root>",
                          _first_line(e)) from None
    assert isinstance(cfg, RunConfig)
    validate(cfg, available_gpus=available_gpus, check_paths=check_paths)
    return cfg


def to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_resolved(cfg: RunConfig, run_dir: str | os.PathLike) -> Path:
    """Write the fully resolved config as `run_dir/config.yaml` (loadable again with load_config)."""
    out = Path(run_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    target = out / "config.yaml"
    from zppo_ray.redact import redact_text

    target.write_text(redact_text(to_yaml(cfg)))  # a credential in a URL or override never lands on disk
    return target


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError("<file>", f"config file not found: {path}")
    try:
        loaded = OmegaConf.load(path)
    except Exception as e:  # yaml.YAMLError and OmegaConf grammar errors
        raise ConfigError("<file>", f"cannot parse {path}: {e}") from None
    data = OmegaConf.to_container(loaded, resolve=False)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("<file>", f"{path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _parse_override(item: str) -> dict:
    """`a.b=v` / `a.list[0].b=v` / `a.list.0.b=v` → nested dict; the value is parsed as YAML."""
    key, sep, raw = item.partition("=")
    key = re.sub(r"\[(\d+)\]", r".\1", key.strip())
    if not sep or not key:
        raise ConfigError(item or "<override>", "an override must look like key.path=value (e.g. algo.tau=0.5)")
    if not re.fullmatch(r"[\w-]+(\.[\w-]+)*", key):  # OmegaConf's own key parser crashes on some ("[=")
        raise ConfigError(key, f"an override key is a dotted path such as algo.tau or data.train[0].path, got {key!r}")
    try:
        parsed = OmegaConf.from_dotlist([f"{key}={raw}"])
    # YAML's own errors ("'", "}", control characters) and ValueError (an int of more than 4300 digits)
    except (OmegaConfBaseException, yaml.YAMLError, ValueError) as e:
        path = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)  # spelled like every other error: data.train[0].path
        raise ConfigError(path, f"cannot parse override {item!r}: {_first_line(e)}") from None
    return OmegaConf.to_container(parsed, resolve=False)  # type: ignore[return-value]


def _apply(node: DictConfig, cls: type, value: Any, path: str, touched: set[str]) -> None:
    """Merge plain `value` into the structured `node` of dataclass `cls`, naming `path` in every error."""
    if not isinstance(value, Mapping):
        raise ConfigError(path or "<root>", f"expected {_describe(cls)}, got {value!r}")
    hints = _hints(cls)
    for key, val in value.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in hints:
            near = difflib.get_close_matches(str(key), list(hints), n=1)
            hint = f" (did you mean '{_join(path, near[0])}'?)" if near else ""
            raise ConfigError(key_path, f"unknown key{hint}; allowed keys here: {', '.join(hints)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            _apply(node[key], tp, val, key_path, touched)
        elif (elem := _list_of_dataclass(tp)) is not None:
            _apply_list(node, key, elem, val, key_path, touched)
        else:
            _assign(node, key, val, key_path, tp)
            touched.add(key_path)


def _apply_list(node: DictConfig, key: str, elem: type, val: Any, path: str, touched: set[str]) -> None:
    """A list of sections: a list replaces it; {index: {...}} (dotted overrides) edits or appends items."""
    if isinstance(val, (list, tuple)):
        items = []
        for i, item in enumerate(val):
            sub = OmegaConf.structured(elem)
            _apply(sub, elem, item, f"{path}[{i}]", touched)
            items.append(sub)
        node[key] = items
        return
    if isinstance(val, Mapping) and all(_is_index(k) for k in val):
        current: ListConfig = node[key]
        for k in sorted(val, key=int):
            i = int(k)
            if i > len(current):
                raise ConfigError(f"{path}[{i}]", f"index out of range: the list has {len(current)} items")
            if i == len(current):
                current.append(OmegaConf.structured(elem))
            _apply(current[i], elem, val[k], f"{path}[{i}]", touched)
        return
    raise ConfigError(path, f"expected a list of {_describe(elem)}, got {val!r}")


def _is_index(key: Any) -> bool:
    """A list index as dotted overrides spell it: 0 or "0". ASCII digits only: "²".isdigit() is True too,
    but int("²") fails."""
    if isinstance(key, int):
        return not isinstance(key, bool) and key >= 0
    return isinstance(key, str) and key.isascii() and key.isdigit()


_BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "y", "n", "1", "0"}


def _assign(node: DictConfig, key: str, val: Any, path: str, tp: Any) -> None:
    # OmegaConf turns any number, or its text, into a bool (-1 -> True, "2" -> True): a switch set to anything
    # but a yes/no word or 0/1 is a mistake to name, not a value to guess
    if tp is bool and not isinstance(val, bool) and not (
            val in (0, 1) or (isinstance(val, str) and val.strip().lower() in _BOOL_WORDS)):
        raise ConfigError(path, f"expected a boolean (true or false), got {val!r}")
    try:
        OmegaConf.update(node, key, val, merge=False)
    except (OmegaConfBaseException, OverflowError) as e:  # OverflowError: float(10**400), not wrapped by OmegaConf
        raise ConfigError(path, f"expected {_describe(tp)}, got {val!r} ({_first_line(e)})") from None


def _apply_algorithm_preset(node: DictConfig, touched: set[str]) -> None:
    m = METHODS.get(node.algo.name)
    preset = m.presets if m is not None else {}
    for key, value in preset.items():
        if f"algo.{key}" not in touched:
            node.algo[key] = value
        elif node.algo[key] != value:
            log.warning("algo.%s=%s overrides the %r preset (%s)", key, node.algo[key], node.algo.name, value)


def _hints(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _list_of_dataclass(tp: Any) -> type | None:
    if typing.get_origin(tp) is list:
        (arg,) = typing.get_args(tp)
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _describe(tp: Any) -> str:
    """Human wording of a type hint, for error messages."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is typing.Union:
        parts = [_describe(a) for a in args if a is not type(None)]
        return " or ".join(parts) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"a list of {_describe(args[0])}" if args else "a list"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    names = {float: "a number (float)", int: "an integer", bool: "a boolean (true/false)", str: "a string"}
    return names.get(tp, "any value")


def _failed_key(e: BaseException) -> str:
    """The key path OmegaConf blames: its own exceptions carry it, others only in their text; "" if none."""
    key = getattr(e, "full_key", None)
    found = re.search(r"full_key: (\S+)", str(e))
    return str(key or (found.group(1) if found else ""))


def _interpolated(node: DictConfig, touched: set[str]) -> list[str]:
    """The user's keys holding an interpolation. Only these are type-checked late (when resolved), and a
    list field given `${...}` of a scalar fails there without OmegaConf naming any key."""
    plain = OmegaConf.to_container(node, resolve=False)
    out = []
    for key in sorted(touched):
        value: Any = plain
        for part in re.findall(r"[^.\[\]]+", key):  # data.train[0].path -> data, train, 0, path
            if isinstance(value, list):
                value = value[int(part)] if part.isdigit() and int(part) < len(value) else None
            else:
                value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and "${" in value:
            out.append(key)
    return out


def _first_line(e: BaseException) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key




def split_cli_args(items: Sequence[str]) -> tuple[str | None, list[str]]:
    """`[config.yaml] key.path=value ...` -> (config file or None, overrides): every entry point's rule."""
    items = list(items)
    path = items.pop(0) if items and "=" not in items[0] else None
    return path, items
