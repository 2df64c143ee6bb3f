"""The one configuration loader: YAML files read strictly, with ``${VAR}`` resolution and
errors that name the file, the line and the key.

Used by the runtime's settings (``runtime/config.py``) and the OpenAI connector's
configuration (``connectors/config.py``). Rules for both:

- every problem raises :class:`ConfigError`, whose text reads
  ``FILE:LINE: KEY.PATH: what is wrong; what to do`` (the line when the value came from a
  file);
- unknown keys are errors (a misspelt ``max_concurent:`` must not silently fall back to
  a permissive default);
- any string value may use ``${VAR}`` (empty when unset) or ``${VAR:-default}`` (the
  default when VAR is unset or empty), anywhere in the string.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

__all__ = [
    "ConfigError",
    "Source",
    "build_dataclass",
    "env_reference",
    "load_yaml",
    "parse_bool",
    "resolve_env",
    "yaml_lines",
]

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")
_T = TypeVar("_T")


class ConfigError(ValueError):
    """A configuration that cannot be used; the text says where and what to do.

    ``source`` is the file (or ``"<dict>"``), ``line`` the 1-based line when known,
    ``key`` the dotted key path (``tenants.acme.max_concurrent``) when the problem is
    about one key.
    """

    def __init__(
        self,
        message: str,
        *,
        source: Optional[str] = None,
        line: Optional[int] = None,
        key: Optional[str] = None,
    ) -> None:
        where = ""
        if source is not None:
            where = f"{source}:{line}: " if line is not None else f"{source}: "
        super().__init__(where + message)
        self.source = source
        self.line = line
        self.key = key


def resolve_env(text: str, environ: Mapping[str, str] = os.environ) -> Tuple[str, List[str]]:
    """Replace ``${VAR}`` / ``${VAR:-default}`` in ``text``.

    Returns the new text and the names of the variables that were unset (and had no
    default), so a caller can say *which* variable to export.
    """
    missing: List[str] = []

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = environ.get(name)
        if default is not None:
            return value if value else default
        if value is None:
            missing.append(name)
            return ""
        return value

    return _ENV_RE.sub(sub, text), missing


def env_reference(text: Any) -> Optional[str]:
    """The variable named by the first ``${VAR}`` in ``text``, if any."""
    if isinstance(text, str):
        found = _ENV_RE.search(text)
        if found:
            return found.group(1)
    return None


def parse_bool(value: object, what: str) -> bool:
    """``true/false/yes/no/on/off/1/0`` (any case) or a YAML boolean; ValueError otherwise."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        low = value.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
    raise ValueError(f"{what} must be true or false, got {value!r}")


def yaml_lines(text: str) -> Dict[str, int]:
    """Line (1-based) of every key path in a YAML document, for error messages."""
    import yaml

    lines: Dict[str, int] = {}
    root = yaml.compose(text, Loader=yaml.SafeLoader)

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = str(getattr(key_node, "value", ""))
                path = f"{prefix}.{key}" if prefix else key
                lines.setdefault(path, key_node.start_mark.line + 1)
                walk(value_node, path)

    if root is not None:
        walk(root, "")
    return lines


class Source:
    """Where values come from, for error messages: the file name and its key lines."""

    def __init__(
        self,
        name: str = "<dict>",
        lines: Optional[Mapping[str, int]] = None,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.name = name
        self.lines = dict(lines or {})
        self.environ = environ

    def line_of(self, key: str) -> Optional[int]:
        while key:
            line = self.lines.get(key)
            if line is not None:
                return line
            key = key.rsplit(".", 1)[0] if "." in key else ""
        return None

    def error(self, key: str, message: str) -> ConfigError:
        """``FILE:LINE: key: message`` (the key's line, or its nearest parent's)."""
        text = f"{key}: {message}" if key else message
        return ConfigError(text, source=self.name, line=self.line_of(key), key=key or None)


def load_yaml(
    path: str, what: str = "config file", missing_hint: str = "check the path"
) -> Tuple[Any, Dict[str, int]]:
    """(parsed document, key lines) of a YAML file; ConfigError for an unreadable file or
    malformed YAML (with the line and column)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {os.path.abspath(path)}; {missing_hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc}") from None
    try:
        import yaml
    except ModuleNotFoundError:  # pragma: no cover - PyYAML is in the runtime extra
        raise ConfigError(
            f"{path}: reading YAML needs PyYAML; pip install 'vastar-fast[runtime]'"
        ) from None
    try:
        return yaml.safe_load(text), yaml_lines(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        column = f", column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        detail = f"{context}: {problem}" if context else str(problem)
        raise ConfigError(
            f"malformed YAML (line {line}{column}): {detail}; check the indentation and quoting",
            source=path,
            line=line,
        ) from None


def _coerce(source: Source, key: str, value: Any, kind: str) -> Any:
    """Check (and ``${VAR}``-resolve) one value against its annotation (a string)."""
    optional = kind.startswith("Optional[")
    base = kind[len("Optional[") : -1] if optional else kind
    if isinstance(value, str) and base != "List[str]":
        from_env = env_reference(value) is not None
        value, missing = resolve_env(value, source.environ)
        if from_env and not value.strip():
            if optional:
                return None  # "${CA_FILE:-}" left empty: not set
            if missing:
                raise source.error(key, f"environment variable {', '.join(missing)} is not set")
        # A number or boolean may come from the environment ("${WORKERS}"); a quoted
        # literal ("3") stays a type error, as YAML typed it a string.
        if from_env and base in ("int", "float", "bool") and value.strip():
            value = value.strip()
            if base == "bool":
                try:
                    return parse_bool(value, "the value")
                except ValueError as exc:
                    raise source.error(key, str(exc)) from None
            try:
                return int(value) if base == "int" else float(value)
            except ValueError:
                pass  # reported below with the expected type
    if value is None:
        if optional:
            return None
        raise source.error(key, "must not be null")
    if base == "bool":
        if not isinstance(value, bool):
            raise source.error(key, f"expected true or false, got {value!r}")
        return value
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise source.error(key, f"expected an integer, got {value!r}")
        return value
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise source.error(key, f"expected a number, got {value!r}")
        return float(value)
    if base == "str":
        if not isinstance(value, str):
            raise source.error(key, f"expected a string, got {value!r}")
        return value
    if base == "List[str]":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise source.error(key, f"expected a list of strings, got {value!r}")
        return [resolve_env(v, source.environ)[0] for v in value]
    raise source.error(key, f"unsupported type {kind}")  # pragma: no cover


def build_dataclass(cls: Type[_T], data: Any, where: str, source: Source) -> _T:
    """An instance of the dataclass ``cls`` from a mapping; unknown keys are errors."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise source.error(where, f"expected a mapping of keys, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: Dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        f = fields.get(str(key))
        if f is None:
            raise source.error(
                path, f"unknown key; known keys here are {', '.join(sorted(fields))}"
            )
        kwargs[f.name] = _coerce(source, path, value, str(f.type))
    return cls(**kwargs)
