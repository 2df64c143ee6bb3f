"""Tool-call arguments generated from a tool's JSON schema, deterministically.

The simulated model "calls" a tool with arguments that validate against the
schema the caller declared: types (also a list of types, and Gemini's upper-case
OpenAPI names), ``required``, ``enum``/``const``, nested objects and arrays,
``minimum``/``maximum`` (exclusive too), ``multipleOf``, ``minLength``/
``maxLength``, ``minItems``/``maxItems``/``uniqueItems``, common string
``format``\\s, ``anyOf``/``oneOf`` (the first branch), ``allOf`` (merged) and
local ``$ref`` (``#/$defs/...``, ``#/definitions/...``, as pydantic emits them).
``pattern`` is not interpreted: a schema with one gets a plain word.

The values come from a :class:`random.Random` seeded with the prompt, the tool
name and the simulator's seed, so the same request gives the same arguments.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any, Dict, List, Mapping, Optional

__all__ = ["generate_arguments", "value_for"]

_WORDS = (
    "alpha", "bravo", "paris", "london", "tokyo", "report", "summary", "weather", "blue",
    "green", "north", "river", "harbour", "sample", "request", "value", "delta", "orbit",
)  # fmt: skip

_MAX_DEPTH = 8


def _rng(*parts: object) -> random.Random:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def generate_arguments(
    schema: Optional[Mapping[str, Any]], prompt: str, name: str, seed: Optional[int]
) -> Dict[str, Any]:
    """Arguments object for one call of tool ``name`` (the schema's root is an object)."""
    if not isinstance(schema, Mapping) or not schema:
        return {}
    value = value_for(schema, _rng(prompt.strip().lower(), name, seed), schema)
    return value if isinstance(value, dict) else {}


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    """Follow local ``$ref`` and merge ``allOf`` into one schema mapping."""
    for _ in range(_MAX_DEPTH):
        ref = schema.get("$ref")
        if not isinstance(ref, str) or not ref.startswith("#/"):
            break
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part.replace("~1", "/").replace("~0", "~"), {})
            if not isinstance(target, Mapping):
                target = {}
                break
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        schema = {**target, **rest}
    parts = schema.get("allOf")
    if isinstance(parts, list) and parts:
        merged: Dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for raw in parts:
            if not isinstance(raw, Mapping):
                continue
            for key, val in _resolve(raw, root).items():
                if key == "properties" and isinstance(val, Mapping):
                    merged["properties"] = {**merged.get("properties", {}), **val}
                elif key == "required" and isinstance(val, list):
                    merged["required"] = [*merged.get("required", []), *val]
                else:
                    merged.setdefault(key, val)
        schema = merged
    return schema


def _type_of(schema: Mapping[str, Any], rng: random.Random) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        options = [str(k).lower() for k in kind if str(k).lower() != "null"]
        kind = options[0] if options else "null"
    if isinstance(kind, str):
        return kind.lower()
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def value_for(
    schema: Mapping[str, Any], rng: random.Random, root: Mapping[str, Any], depth: int = 0
) -> Any:
    """A value valid against ``schema`` (local refs resolved against ``root``)."""
    schema = _resolve(schema, root)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[rng.randrange(len(enum))]
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list) and branches:
            # The first non-null branch: oneOf branches rarely overlap in tool schemas.
            chosen = next(
                (b for b in branches if isinstance(b, Mapping) and b.get("type") != "null"),
                branches[0],
            )
            return value_for(chosen, rng, root, depth + 1)
    kind = _type_of(schema, rng)
    if kind == "object":
        return _object(schema, rng, root, depth)
    if kind == "array":
        return _array(schema, rng, root, depth)
    if kind == "integer":
        return _integer(schema, rng)
    if kind == "number":
        return _number(schema, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng)


def _object(
    schema: Mapping[str, Any], rng: random.Random, root: Mapping[str, Any], depth: int
) -> Dict[str, Any]:
    props = schema.get("properties")
    if not isinstance(props, Mapping) or depth >= _MAX_DEPTH:
        return {}
    required = schema.get("required")
    needed = set(required) if isinstance(required, list) else set()
    out: Dict[str, Any] = {}
    for name, sub in props.items():
        # Required properties always; optional ones about half the time.
        if name in needed or (depth < 3 and rng.random() < 0.5):
            out[name] = value_for(sub if isinstance(sub, Mapping) else {}, rng, root, depth + 1)
    return out


def _array(
    schema: Mapping[str, Any], rng: random.Random, root: Mapping[str, Any], depth: int
) -> List[Any]:
    low = _int_or(schema.get("minItems"), 1 if depth < _MAX_DEPTH else 0)
    high = _int_or(schema.get("maxItems"), max(low, 3))
    count = 0 if depth >= _MAX_DEPTH else rng.randint(low, max(low, min(high, low + 3)))
    items = schema.get("items")
    sub = items if isinstance(items, Mapping) else {}
    out: List[Any] = []
    for _ in range(count * 4 if schema.get("uniqueItems") else count):
        if len(out) == count:
            break
        value = value_for(sub, rng, root, depth + 1)
        if schema.get("uniqueItems") and value in out:
            continue
        out.append(value)
    return out


def _int_or(value: Any, default: int) -> int:
    return (
        int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default
    )


def _bounds(schema: Mapping[str, Any], default_low: float, default_high: float) -> List[float]:
    low, high = default_low, default_high
    lo_set = hi_set = False
    for key, exclusive in (("minimum", False), ("exclusiveMinimum", True)):
        value = schema.get(key)
        if isinstance(value, bool) and key == "exclusiveMinimum":
            continue  # draft-4 boolean form: handled with "minimum" below
        if isinstance(value, (int, float)):
            low, lo_set = float(value), True
            if exclusive or schema.get("exclusiveMinimum") is True:
                low = math.nextafter(low, math.inf)
    for key, exclusive in (("maximum", False), ("exclusiveMaximum", True)):
        value = schema.get(key)
        if isinstance(value, bool) and key == "exclusiveMaximum":
            continue
        if isinstance(value, (int, float)):
            high, hi_set = float(value), True
            if exclusive or schema.get("exclusiveMaximum") is True:
                high = math.nextafter(high, -math.inf)
    if lo_set and not hi_set:
        high = max(low + 100.0, high)
    if hi_set and not lo_set:
        low = min(high - 100.0, low)
    if high < low:
        high = low
    return [low, high]


def _integer(schema: Mapping[str, Any], rng: random.Random) -> int:
    low_f, high_f = _bounds(schema, 0.0, 100.0)
    low, high = math.ceil(low_f), math.floor(high_f)
    if high < low:
        high = low
    step = schema.get("multipleOf")
    if isinstance(step, int) and not isinstance(step, bool) and step > 0:
        first = -(-low // step) * step
        if first > high:
            return first
        return first + step * rng.randint(0, (high - first) // step)
    return rng.randint(low, high)


def _number(schema: Mapping[str, Any], rng: random.Random) -> float:
    low, high = _bounds(schema, 0.0, 100.0)
    step = schema.get("multipleOf")
    if isinstance(step, (int, float)) and not isinstance(step, bool) and step > 0:
        first = math.ceil(low / step)
        last = max(first, math.floor(high / step))
        return float(rng.randint(first, last) * step)
    value = round(rng.uniform(low, high), 2)
    return value if low <= value <= high else low


def _string(schema: Mapping[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt == "date":
        return f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    if fmt == "date-time":
        return f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z"
    if fmt == "time":
        return f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
    if fmt == "email":
        return f"{rng.choice(_WORDS)}@example.com"
    if fmt in ("uri", "url"):
        return f"https://example.com/{rng.choice(_WORDS)}"
    if fmt == "uuid":
        return f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}-a{rng.getrandbits(12):03x}-{rng.getrandbits(48):012x}"  # fmt: skip
    low = _int_or(schema.get("minLength"), 0)
    high = _int_or(schema.get("maxLength"), max(low, 40))
    words = [rng.choice(_WORDS) for _ in range(rng.randint(1, 3))]
    text = " ".join(words)
    while len(text) < low:
        text += " " + rng.choice(_WORDS)
    text = text[: max(high, 0)]
    return text if len(text) >= low else text.ljust(low, "x")
