"""Tagged JSON: the one codec for state files that must round-trip exactly without pickle.

JSON alone loses what this project's state holds: tuples (Question.images), bytes (an image kept by
value), dicts with int keys (DeepSpeed's optimizer state), OrderedDicts. Each of those becomes a small tagged
object, `{"__t": "tuple", "items": [...]}`; everything else is plain JSON. Decoding builds only these types.
A user of the codec may add its own tags (the learner checkpoints add tensors, dtypes and an allowlist of
DeepSpeed classes, zppo_ray/state/safe_checkpoint.py) through `extra`; nothing else can be instantiated.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

TAG = "__t"
PRIMITIVES = (bool, int, float, str, type(None))

# extra encoder: (value, path, encode) -> the tagged form, or NotImplemented when it does not know the type
ExtraEncoder = Callable[[Any, list[str], Callable[[Any, list[str]], Any]], Any]
# extra decoder: (tag, node, decode) -> the value, or NotImplemented for an unknown tag
ExtraDecoder = Callable[[str, dict, Callable[[Any], Any]], Any]


def pointer(path: list[str]) -> str:
    """A JSON pointer (RFC 6901) naming where in the tree a value sits, for keys and error messages."""
    return "/" + "/".join(p.replace("~", "~0").replace("/", "~1") for p in path)


def encode(value: Any, extra: ExtraEncoder | None = None) -> Any:
    """The JSON-able tagged form of `value`; TypeError naming the place of anything it cannot hold."""

    def enc(x: Any, path: list[str]) -> Any:
        if type(x) in PRIMITIVES:
            return x
        if type(x) is list:
            return [enc(v, path + [str(i)]) for i, v in enumerate(x)]
        if type(x) is dict and all(type(k) is str for k in x) and TAG not in x:
            return {k: enc(v, path + [k]) for k, v in x.items()}
        if type(x) in (dict, OrderedDict):
            bad = [k for k in x if type(k) not in PRIMITIVES]
            if bad:
                raise TypeError(f"{pointer(path)}: a dict key of type {type(bad[0]).__qualname__} cannot be stored")
            return {TAG: "dict" if type(x) is dict else "odict", "items": [[k, enc(v, path + [str(k)])]
                                                                         for k, v in x.items()]}
        if type(x) is tuple:
            return {TAG: "tuple", "items": [enc(v, path + [str(i)]) for i, v in enumerate(x)]}
        if type(x) is bytes:
            return {TAG: "bytes", "b64": base64.b64encode(x).decode("ascii")}
        if extra is not None and (out := extra(x, path, enc)) is not NotImplemented:
            return out
        raise TypeError(f"{pointer(path)}: cannot store a {type(x).__module__}.{type(x).__qualname__} "
                        "(plain data only: numbers, strings, bytes, lists, tuples, dicts)")

    return enc(value, [])


def decode(tree: Any, extra: ExtraDecoder | None = None) -> Any:
    """The inverse of `encode`; an unknown tag is a ValueError, never a guess."""

    def dec(x: Any) -> Any:
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            return x
        tag = x.get(TAG)
        if tag is None:
            return {k: dec(v) for k, v in x.items()}
        if tag in ("dict", "odict"):
            return (dict if tag == "dict" else OrderedDict)((k, dec(v)) for k, v in x["items"])
        if tag == "tuple":
            return tuple(dec(v) for v in x["items"])
        if tag == "bytes":
            return base64.b64decode(x["b64"])
        if extra is not None and (out := extra(tag, x, dec)) is not NotImplemented:
            return out
        raise ValueError(f"unsupported tagged entry {tag!r} {x.get('cls', '')}".rstrip())

    return dec(tree)
