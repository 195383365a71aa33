"""Fuzzing config loading (zppo_ray.config.load_config): dotted CLI overrides and YAML files.

Property: the result is a RunConfig or a ConfigError whose text names the offending key (its full dotted
path, as the module promises: "turns every failure into a ConfigError naming the full key path"); never
another exception type, and never an accepted value outside the ranges the module enforces (_UNIT,
_AT_LEAST_0, _AT_LEAST_1, _POSITIVE, _PROB, ...). The range lists are read from the module, so keys added
to them later are fuzzed too.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from zppo_ray import config as C
from zppo_ray.config import ConfigError, RunConfig, load_config

SCALE = int(os.environ.get("ZPPO_FUZZ_SCALE", "1"))


@pytest.fixture(autouse=True, scope="module")
def _no_torch_probe():
    """Answer "no CUDA" without importing torch (seconds): the CPU rules are the stricter ones anyway."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("zppo_ray.config.checks._cuda_available", lambda: False)
        yield


def _leaves(cls: type, prefix: str = "") -> dict[str, typing.Any]:
    """Every settable leaf key of the schema ("data.train.0.path" for lists of sections) → its type hint."""
    out: dict[str, typing.Any] = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out.update(_leaves(tp, key + "."))
        elif typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
            out.update(_leaves(typing.get_args(tp)[0], key + ".0."))
        else:
            out[key] = tp
    return out


LEAVES = _leaves(RunConfig)
NUMERIC = sorted(k for k, tp in LEAVES.items() if tp in (int, float))
RANGES = (
    [(k, 0.0, 1.0, False, False) for k in C._UNIT]
    + [(k, 1, None, False, False) for k in C._AT_LEAST_1]
    + [(k, 0, None, False, False) for k in C._AT_LEAST_0]
    + [(k, 0, None, True, False) for k in C._POSITIVE]
    + [(k, 0.0, 1.0, True, False) for k in C._PROB]
    + [("algo.eps_low", 0.0, 1.0, False, True), ("learner.zero_stage", 0, 3, False, False)]
)


def _path(key: str) -> str:
    """The key path as ConfigError spells it: data.train.0.path → data.train[0].path."""
    return re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", key)


def names_key(err: ConfigError, key: str) -> bool:
    """Whether the error points at `key`: its full path appears in the text, or a problem sits on a parent
    path and spells out the leaf ("toy.student: hidden_size, ... must be >= 1") or says the parent itself
    is an unknown key."""
    path = _path(key)
    if path in str(err):
        return True
    parent, _, leaf = path.rpartition(".")
    if any(k == parent and re.search(rf"\b{re.escape(leaf)}\b", m) for k, m in err.problems):
        return True
    # an unknown key is named where the path first leaves the schema: "nosuch" for nosuch.x
    return any(path.startswith(k + ".") and m.startswith("unknown key") for k, m in err.problems)


# ----------------------------------------------------------------------------------- values

scalar_text = st.one_of(
    st.integers(-10**6, 10**6).map(str),
    st.floats().map(repr),
    st.sampled_from(["nan", ".nan", "NaN", "inf", "-inf", ".inf", "1e400", "-0.0", "0", "1", "2", "true", "false",
                     "null", "~", "''", '""', "[]", "{}", "[1, 2]", "{a: 1}", "0x10", "1_000", "12:30", "2020-01-01",
                     "${algo.tau}", "${nope}", "${oc.env:NOPE_ZPPO}", "${now:%Y}", "${", "}", "'", "[", "{",
                     "x" * 5000, str(10**400), "1" * 5000, f"[{10**400}, 0.9]", "\x00", "\t", "😀", "²", "toy",
                     "toy:student", "toy:big", "grpo", "gsm8k", "a.jsonl", "~nosuchuser/x.parquet",
                     "/" + "a" * 5000 + ".jsonl"]),
    st.text(max_size=12),
)


@st.composite
def known_override(draw) -> tuple[str, str]:
    key = draw(st.sampled_from(sorted(LEAVES)))
    if draw(st.booleans()):
        key = _path(key)  # both spellings of list indexes
    return key, draw(scalar_text)


@settings(max_examples=80 * SCALE)
@given(case=known_override())
@example(case=("algo.tau", "nan"))
@example(case=("algo.dual_clip", "nan"))
@example(case=("trainer.run_dir", "${now:\x00}"))
@example(case=("data.train.0.column_map", "{1: a, b: c}"))
@example(case=("data.train.0.path", "x" * 5000))
@example(case=("toy.student.hidden_size", "4"))
@example(case=("student.max_model_len", "2048"))
@example(case=("algo.tau", str(10**400)))  # float(10**400) raises OverflowError inside OmegaConf
@example(case=("algo.tau", "1" * 5000))  # YAML's int() refuses more than 4300 digits
@example(case=("toy.student.tier_weights", "${algo.tau}"))  # a list resolved late: OmegaConf names no key
@example(case=("learner.gradient_checkpointing", "-1"))  # OmegaConf made this True: now refused by name
@example(case=("learner.gradient_checkpointing", "'2'"))  # and this
@example(case=("learner.gradient_checkpointing", "n"))  # a yes/no word stays a switch
@example(case=("algo.use_buffer", "0"))  # the user's key wins over the method's preset
def test_override_of_a_known_key_is_loaded_or_named(case):
    key, raw = case
    try:
        cfg = load_config(None, [f"{key}={raw}"], check_paths=True)
    except ConfigError as e:
        assert names_key(e, key), f"{key}={raw!r} -> {e}"
        return
    assert isinstance(cfg, RunConfig)
    # and the override took effect: an accepted switch that changed nothing would pass the lines above
    want, got = asked_for(cfg, key, raw), value_at(cfg, key)
    assert want is UNKNOWN or same_value(got, want, raw), f"{key}={raw!r} loaded as {got!r}, asked for {want!r}"


UNKNOWN = object()


def value_at(cfg, key: str):
    node = cfg
    for part in re.sub(r"\[(\d+)\]", r".\1", key).split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def asked_for(cfg, key: str, raw: str):
    """The value an override's text asks for, as the parser reads it (an interpolation: what it refers to)."""
    from zppo_ray.config.load import _parse_override

    if raw.strip() == "${algo.tau}":
        return cfg.algo.tau
    if "${" in raw:  # an environment variable or a resolver: what it yields is the resolver's business
        return UNKNOWN
    node = _parse_override(f"{key}={raw}")
    for part in re.sub(r"\[(\d+)\]", r".\1", key).split("."):
        node = node[part]
    return node


def same_value(got, want, raw: str) -> bool:
    """Equal after the schema's type conversion: an int for a float field, a text kept verbatim for a str field."""
    if isinstance(got, (list, tuple)) and isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(same_value(g, w, str(w)) for g, w in zip(got, want))
    if isinstance(got, str) and not isinstance(want, str):
        return got == raw.strip() or got == str(want)
    if isinstance(got, bool) and isinstance(want, str):  # a yes/no word for a switch
        return got == (want.strip().lower() in ("true", "yes", "on", "y", "1"))
    return got == want


@settings(max_examples=50 * SCALE)
@given(item=st.text(max_size=40) | st.lists(st.sampled_from(
    ["algo", "data", "train", "0", "[0]", "[²]", "²", "١", ".", "..", "=", "tau", "path", " ", "${", "x"]),
    max_size=8).map("".join))
@example(item="data.train.².path=x.jsonl")
@example(item="=1")
@example(item="algo..tau=1")
@example(item="[=")  # OmegaConf's dotlist parser raised IndexError
@example(item="[]=")
@example(item="trainer.steps=" + str(10**400) + "\x00")
def test_any_override_text_is_loaded_or_a_config_error(item):
    try:
        cfg = load_config(None, [item])
    except ConfigError as e:
        assert str(e) and e.key
        return
    assert isinstance(cfg, RunConfig)


@settings(max_examples=30 * SCALE)
@given(section=st.sampled_from(sorted({k.rsplit(".", 1)[0] for k in LEAVES} | {""})),
       name=st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True), value=scalar_text)
def test_unknown_keys_are_named(section, name, value):
    key = f"{section}.{name}" if section else name
    if key in LEAVES or any(k.startswith(key + ".") for k in LEAVES):
        return  # a real key or section
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"{key}={value}"])
    # The key is named; "unknown key" unless the value could not even be parsed ("${", "'").
    assert e.value.key == _path(key), str(e.value)
    assert "unknown key" in str(e.value) or "cannot parse override" in str(e.value)


# ----------------------------------------------------------------------------------- ranges


def test_the_range_lists_cover_the_documented_ranges():
    """The range fuzzing reads the module's lists; pin the documented core so a key dropped from them (and
    then accepted whatever its value) fails here rather than shrinking the fuzzed set silently."""
    ranged = {k for k, *_ in RANGES}
    core = {"algo.tau", "algo.rho_replay", "algo.rho_aug", "buffer.tau", "algo.eps_low", "algo.eps_high",
            "rollout.top_p", "rollout.temperature", "rollout.group_size", "teacher.group_size", "learner.lr",
            "learner.zero_stage", "trainer.prompts_per_step", "algo.updates_per_step", "buffer.capacity",
            "buffer.ema_alpha", "eval.top_p", "checkpoint.keep_last", "trainer.steps"}
    assert core <= ranged, sorted(core - ranged)
    assert ranged <= set(LEAVES), sorted(ranged - set(LEAVES))


@st.composite
def out_of_range(draw) -> tuple[str, str]:
    key, lo, hi, lo_open, hi_open = draw(st.sampled_from(RANGES))
    integer = LEAVES[key] is int
    choices = [st.just("nan")] if not integer else []
    if lo is not None:
        below = st.integers(-10**9, int(lo) - (0 if lo_open else 1)) if integer else st.floats(
            max_value=lo, exclude_max=not lo_open, allow_nan=False)
        choices.append(below.map(repr))
    if hi is not None:
        above = st.integers(int(hi) + (0 if hi_open else 1), 10**9) if integer else st.floats(
            min_value=hi, exclude_min=not hi_open, allow_nan=False)
        choices.append(above.map(repr))
    return key, draw(st.one_of(choices))


@settings(max_examples=60 * SCALE)
@given(case=out_of_range())
@example(case=("algo.tau", "nan"))
@example(case=("learner.lr", "nan"))
@example(case=("rollout.top_p", ".nan"))
def test_out_of_range_values_are_refused_by_name(case):
    key, raw = case
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"{key}={raw}"])
    assert names_key(e.value, key), str(e.value)


@settings(max_examples=50 * SCALE)
@given(key=st.sampled_from(NUMERIC), value=st.integers(-10**6, 10**6) | st.floats(width=32))
@example(key="algo.dual_clip", value=math.nan)
@example(key="toy.student.pretrain_lr", value=math.nan)
@example(key="eval.presence_penalty", value=math.nan)
def test_an_accepted_number_is_the_number_given(key, value):
    """A value that loads is stored as given (no silent conversion), and NaN never loads: it passes every
    `<`/`>` range check unnoticed, so each range would be void."""
    raw = "nan" if isinstance(value, float) and math.isnan(value) else repr(value)
    try:
        cfg = load_config(None, [f"{key}={raw}"])
    except ConfigError as e:
        assert names_key(e, key), str(e)
        return
    got = C._get(cfg, key)
    assert not (isinstance(got, float) and math.isnan(got)), f"{key}=nan accepted"
    assert got == value and isinstance(got, LEAVES[key])


# ----------------------------------------------------------------------------------- YAML files


@st.composite
def yaml_document(draw) -> tuple[str, list[str]]:
    """A YAML config with a few known (and sometimes unknown) keys, and the dotted keys it sets."""
    keys = draw(st.lists(st.sampled_from(sorted(k for k in LEAVES if ".0." not in k)), min_size=1, max_size=4,
                         unique=True))
    if draw(st.booleans()):
        keys.append(draw(st.sampled_from(["algo.taux", "nosuch.x", "rollout.group_sise", "toy.student.depth"])))
    doc: dict = {}
    for key in keys:
        *parents, leaf = key.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[leaf] = yaml.safe_load(draw(scalar_text.filter(_loads_as_yaml)))
    return yaml.safe_dump(doc, allow_unicode=True), keys


def _loads_as_yaml(text: str) -> bool:
    try:
        yaml.safe_load(text)
    except (yaml.YAMLError, ValueError):  # ValueError: an int of more than 4300 digits
        return False
    return True


@settings(max_examples=30 * SCALE)
@given(case=yaml_document())
@example(case=("algo:\n  tau: .nan\n", ["algo.tau"]))
@example(case=("algo:\n  enable_ncq: ${oc.env:NOPE_ZPPO}\n", ["algo.enable_ncq"]))  # read by the method preset
def test_yaml_file_is_loaded_or_names_a_key_it_sets(case):
    text, keys = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            cfg = load_config(path, [])
        except ConfigError as e:
            assert any(names_key(e, k) for k in keys), f"{text!r} -> {e}"
            return
    assert isinstance(cfg, RunConfig)
    doc = yaml.safe_load(text)
    for key in keys:  # every key the file sets took effect
        want = doc
        for part in key.split("."):
            want = want[part]
        if isinstance(want, str) and "${" in want:
            continue  # an interpolation: resolved by OmegaConf, checked by the override test's example
        got = value_at(cfg, key)
        assert same_value(got, want, str(want)), f"{key}: {want!r} in the file loaded as {got!r}"


@settings(max_examples=25 * SCALE)
@given(text=st.text(max_size=60) | st.lists(st.sampled_from(
    ["algo:", "\n", "  ", "tau:", " 0.3", "- ", "[", "{", "}", ":", "!!python/object:os.system", "&a", "*a", "\t",
     "%YAML 1.1", "---", "...", "\x00", "rollout:", "group_size: 8", "\ufeff"]), max_size=12).map("".join))
def test_any_yaml_text_is_loaded_or_a_config_error(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "junk.yaml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            cfg = load_config(path, [])
        except ConfigError as e:
            assert str(e) and e.key
            return
    assert isinstance(cfg, RunConfig)


def test_a_zero_tau_names_the_key_the_user_set():
    """Found by the fuzz test above: algo.tau=0 used to be reported as buffer.tau only (its interpolated copy)."""
    from zppo_ray.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"algo\.tau: must be in \(0, 1\]"):
        load_config(None, ["algo.tau=0"])
