"""vastar_fast._records against the real thing: every class made with ``record`` behaves as
the ``dataclasses.dataclass`` built from the very same class source, and every
``NamedTuple`` as the ``typing.NamedTuple`` built from its source.

The real twin of a class is made by executing its own source text (``inspect.getsource``)
in a copy of its module's namespace where ``record``/``field``/``NamedTuple`` are the
real ones, so both come from one definition.
"""

from __future__ import annotations
import __future__

import copy
import dataclasses
import inspect
import pickle
import subprocess
import sys
import textwrap
import threading
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

import vastar_fast
from vastar_fast import _records
from vastar_fast._records import NamedTuple, field, record
from vastar_fast.client.endpoint import Endpoint
from vastar_fast.client.results import HealthStatus
from vastar_fast.protocol import events, frames
from vastar_fast.types import ErrorClass, HTTPRequest, HTTPResponse, RuntimeConfig

SRC = str(Path(vastar_fast.__file__).resolve().parents[1])


# Records that exercise what the package's own do not: default_factory, a field named
# self, __post_init__, frozen with a factory, no fields at all.
@record
class Factories:
    """Defaults made per instance."""

    name: str
    tags: List[str] = field(default_factory=list)
    meta: Dict[str, int] = field(default_factory=dict)
    note: Optional[str] = field(default=None)
    count: int = 3


def _one_two() -> List[int]:
    return [1, 2]


@record(frozen=True)
class FrozenFactory:
    """A frozen record with a factory."""

    self: int
    items: List[int] = field(default_factory=_one_two)


@record
class PostInit:
    """__post_init__ runs after the fields are set."""

    a: int
    b: int = 2

    def __post_init__(self) -> None:
        self.total = self.a + self.b


@record
class Empty:
    """No fields."""


@record(frozen=True)
class FrozenEmpty:
    """No fields, frozen."""


class Point(NamedTuple):
    """A point."""

    x: int
    y: int = 0
    label: Optional[str] = None

    def norm1(self) -> int:
        return abs(self.x) + abs(self.y)


class Bare(NamedTuple):
    pass


RECORDS: Dict[type, List[Dict[str, Any]]] = {
    RuntimeConfig: [{}, {"tenant_id": "t", "use_tcp": True, "tcp_port": 1}],
    HTTPRequest: [
        {"method": "GET", "url": "http://x/"},
        {"method": "POST", "url": "u", "headers": {"a": "b"}, "body": b"x", "timeout_ms": 5},
    ],
    HTTPResponse: [
        {
            "request_id": 1,
            "status_code": 200,
            "headers": {"h": "v"},
            "body": b"ok",
            "duration_us": 3,
            "error_class": ErrorClass.SUCCESS,
        },
        {
            "request_id": 2,
            "status_code": 0,
            "headers": {},
            "body": b"",
            "duration_us": 0,
            "error_class": ErrorClass.TIMEOUT,
            "error_message": "late",
        },
    ],
    HealthStatus: [
        {"healthy": True, "message": None, "active_requests": 0, "available_credits": 9},
        {
            "healthy": False,
            "message": "m",
            "active_requests": 1,
            "available_credits": 0,
            "supported": False,
        },
    ],
    Endpoint: [{}, {"path": "/tmp/s"}, {"path": None, "host": "h", "port": 1}],
    Factories: [{"name": "n"}, {"name": "n", "tags": ["a"], "meta": {"k": 1}, "count": 0}],
    FrozenFactory: [{"self": 1}, {"self": 2, "items": [3]}],
    PostInit: [{"a": 1}, {"a": 1, "b": 5}],
    Empty: [{}],
    FrozenEmpty: [{}],
}


# class attributes compared by value (the lazy two are compared field by field, and the
# exec'd twin's source starts at line 1)
NOT_COMPARED = ("__dataclass_fields__", "__dataclass_params__", "__firstlineno__")
TUPLE_ATTRIBUTES = ("_fields", "_field_defaults", "__doc__", "__module__", "__qualname__")
TUPLE_ATTRIBUTES += ("__name__", "__match_args__")


def _real_twin(cls: type) -> type:
    """The class made from cls's own source with the real dataclass / NamedTuple."""
    module = sys.modules[cls.__module__]
    namespace = dict(vars(module))
    namespace.update(record=dataclasses.dataclass, field=dataclasses.field)
    namespace["NamedTuple"] = typing.NamedTuple
    source = textwrap.dedent(inspect.getsource(cls))
    # under the future import, as every module defining records is
    flags = __future__.annotations.compiler_flag
    exec(
        compile(source, f"<real {cls.__name__}>", "exec", flags=flags, dont_inherit=True), namespace
    )
    real = namespace[cls.__name__]
    assert real is not cls
    return real  # type: ignore[no-any-return]


def _outcome(fn: Any, *args: Any, **kwargs: Any) -> tuple:
    """What a call did: ("returned", repr of the result) or ("raised", exception type)."""
    try:
        return ("returned", repr(fn(*args, **kwargs)))
    except Exception as exc:
        return ("raised", type(exc))


def _field_view(f: dataclasses.Field) -> tuple:  # type: ignore[type-arg]
    return (repr(f), f.name, f.type, f.default, f.default_factory, f._field_type)  # type: ignore[attr-defined]


def _signature_view(cls: type) -> List[tuple]:
    return [
        (p.name, p.kind, p.annotation, repr(p.default)) for p in inspect.signature(cls).parameters.values()
    ]  # fmt: skip


@pytest.mark.parametrize("cls", list(RECORDS), ids=lambda c: c.__name__)
def test_record_is_the_dataclass_built_from_its_source(cls: type) -> None:
    real = _real_twin(cls)
    assert dataclasses.is_dataclass(cls) and dataclasses.is_dataclass(real)
    assert _signature_view(cls) == _signature_view(real)
    assert str(inspect.signature(cls)) == str(inspect.signature(real))
    assert cls.__init__.__annotations__ == real.__init__.__annotations__  # type: ignore[misc]
    assert cls.__doc__ == real.__doc__
    assert getattr(cls, "__match_args__", None) == getattr(real, "__match_args__", None)
    assert (cls.__hash__ is None) == (real.__hash__ is None)  # type: ignore[comparison-overlap]
    assert repr(cls.__dataclass_params__) == repr(real.__dataclass_params__)  # type: ignore[attr-defined]
    ours_fields = [_field_view(f) for f in dataclasses.fields(cls)]
    assert ours_fields == [_field_view(f) for f in dataclasses.fields(real)]
    # the same class attributes (defaults, methods) and nothing else
    assert sorted(vars(cls)) == sorted(vars(real))
    for name in vars(real):
        assert type(vars(cls)[name]) is type(vars(real)[name]), name
        value = vars(real)[name]
        if not hasattr(value, "__get__") and name not in NOT_COMPARED:
            assert vars(cls)[name] == value, name
    for name in ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__"):
        ours, theirs = vars(cls).get(name), vars(real).get(name)
        assert (ours is None) == (theirs is None), name
        if ours is not None:
            assert ours.__qualname__ == theirs.__qualname__, name
            assert ours.__module__ == theirs.__module__, name

    frozen = real.__dataclass_params__.frozen  # type: ignore[attr-defined]
    for kwargs in RECORDS[cls]:
        a, b = cls(**kwargs), real(**kwargs)
        assert repr(a) == repr(b)
        assert dataclasses.asdict(a) == dataclasses.asdict(b)  # type: ignore[call-overload]
        assert dataclasses.astuple(a) == dataclasses.astuple(b)  # type: ignore[call-overload]
        assert vars(a) == vars(b)
        assert a == cls(**kwargs) and b == real(**kwargs)
        assert (a == b) is False and a.__eq__(b) is NotImplemented
        assert a.__eq__(object()) is NotImplemented
        assert _outcome(hash, a) == _outcome(hash, b)
        assert _outcome(hash, a) == _outcome(hash, cls(**kwargs))
        assert frozen or _outcome(hash, a) == ("raised", TypeError)
        # positional construction, in the fields' order
        names = [f.name for f in dataclasses.fields(cls)]
        values = [getattr(a, n) for n in names]
        assert cls(*values) == a
        for f in dataclasses.fields(cls):
            changed = _outcome(dataclasses.replace, a, **{f.name: "other"})
            assert changed == _outcome(dataclasses.replace, b, **{f.name: "other"})
            if changed[0] == "returned":
                assert getattr(dataclasses.replace(a, **{f.name: "other"}), f.name) == "other"
        if sys.version_info >= (3, 13):
            assert repr(copy.replace(a)) == repr(copy.replace(b))  # type: ignore[attr-defined]
        if sys.version_info >= (3, 10) and names:  # a match statement (3.10+ syntax)
            matched: Dict[str, Any] = {"a": a, "cls": cls}
            exec("match a:\n case cls(first):\n  found = first\n case _:\n  found = None", matched)
            assert matched["found"] == values[0]
        assert pickle.loads(pickle.dumps(a)) == a
        assert copy.deepcopy(a) == a and copy.copy(a) == a
        if frozen:
            for obj in (a, b):
                for name in [*names, "new_attribute"]:
                    with pytest.raises(dataclasses.FrozenInstanceError):
                        setattr(obj, name, 1)
                    with pytest.raises(dataclasses.FrozenInstanceError):
                        delattr(obj, name)
        elif names:
            setattr(a, names[0], "set")
            assert getattr(a, names[0]) == "set"


def test_factories_make_a_new_value_per_instance() -> None:
    one, two = Factories("a"), Factories("b")
    assert one.tags == [] and one.tags is not two.tags
    assert FrozenFactory(1).items is not FrozenFactory(1).items
    assert not hasattr(Factories, "tags")  # as dataclasses: no class attribute for those
    assert Factories.note is None and Factories.count == 3
    assert PostInit(1).total == 3


def test_equality_follows_this_python_dataclasses() -> None:
    """3.13 compares field by field (identity first); before, as tuples."""
    real = _real_twin(Factories)
    nan = float("nan")
    ours, theirs = Factories("x", count=nan), real("x", count=nan)  # type: ignore[arg-type]
    assert (ours == Factories("x", count=nan)) == (theirs == real("x", count=nan))  # type: ignore[arg-type]
    assert (ours == ours) is (theirs == theirs) is True


def test_recursive_repr_is_cut_as_dataclasses_does() -> None:
    real = _real_twin(Factories)
    ours, theirs = Factories("x"), real("x")
    ours.tags.append(ours)  # type: ignore[arg-type]
    theirs.tags.append(theirs)
    assert (
        repr(ours) == repr(theirs) == "Factories(name='x', tags=[...], meta={}, note=None, count=3)"
    )


def test_subclass_made_a_dataclass_inherits_the_fields() -> None:
    @dataclasses.dataclass
    class Sub(HTTPRequest):
        """A user's subclass."""

        extra: int = 0

    assert [f.name for f in dataclasses.fields(Sub)][-2:] == ["trace_id", "extra"]
    assert Sub("GET", "u", extra=1).extra == 1


def test_unsupported_definitions_are_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match="docstring"):

        @record
        class NoDoc:
            a: int

    with pytest.raises(TypeError, match="follows default"):

        @record
        class Order:
            """Bad order."""

            a: int = 1
            b: int  # type: ignore[misc]

    with pytest.raises(ValueError, match="mutable default"):

        @record
        class Mutable:
            """A list default."""

            a: List[int] = []  # type: ignore[misc]  # noqa: RUF012

    with pytest.raises(TypeError, match="defines __repr__"):

        @record
        class OwnRepr:
            """Own repr."""

            a: int

            def __repr__(self) -> str:
                return "x"

    with pytest.raises(TypeError, match="base classes"):

        @record
        class Derived(Exception):
            """A base."""

            a: int


NAMED_TUPLES = [
    getattr(module, name)
    for module in (frames, events)
    for name in dir(module)
    if isinstance(getattr(module, name), type)
    and issubclass(getattr(module, name), tuple)
    and getattr(module, name).__module__ == module.__name__
] + [Point, Bare]


def test_every_named_tuple_is_found() -> None:
    assert len(NAMED_TUPLES) >= 19, NAMED_TUPLES


def _annotations_view(cls: type) -> Dict[str, object]:
    return {
        k: v.__forward_arg__ if isinstance(v, typing.ForwardRef) else v
        for k, v in cls.__annotations__.items()
    }


@pytest.mark.parametrize("cls", NAMED_TUPLES, ids=lambda c: c.__name__)
def test_named_tuple_is_the_typing_one_built_from_its_source(cls: type) -> None:
    real = _real_twin(cls)
    assert cls.__bases__ == real.__bases__ == (tuple,)
    for name in TUPLE_ATTRIBUTES:
        assert getattr(cls, name, None) == getattr(real, name, None), name
    # typing wraps string annotations in ForwardRef; these keep the strings
    assert _annotations_view(cls) == _annotations_view(real)
    assert all(isinstance(v, str) for v in cls.__annotations__.values())
    assert [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()] == [
        (p.name, p.kind, p.default) for p in inspect.signature(real).parameters.values()
    ]
    # typing also keeps __orig_bases__ (typing.NamedTuple); nothing else differs
    assert sorted(set(vars(real)) - {"__orig_bases__"}) == sorted(vars(cls))
    for name, value in vars(real).items():
        if name != "__orig_bases__" and callable(value) and hasattr(value, "__code__"):
            assert vars(cls)[name].__code__.co_code == value.__code__.co_code, name
    values = tuple(range(len(cls._fields)))  # type: ignore[attr-defined]
    ours, theirs = cls(*values), real(*values)
    assert repr(ours) == repr(theirs) and ours == theirs
    assert ours._asdict() == theirs._asdict()  # type: ignore[attr-defined]
    assert tuple.__new__(cls, values) == ours
    assert pickle.loads(pickle.dumps(ours)) == ours
    assert type(pickle.loads(pickle.dumps(ours))) is cls


def test_named_tuple_defaults_and_methods() -> None:
    assert Point(1) == (1, 0, None) and Point(3, -4).norm1() == 7
    assert Point._field_defaults == {"y": 0, "label": None}
    assert Bare() == () and Bare._fields == ()
    with pytest.raises(TypeError, match="cannot follow default"):

        class Bad(NamedTuple):
            a: int = 0
            b: int  # type: ignore[misc]

    with pytest.raises(AttributeError, match="_make"):

        class Prohibited(NamedTuple):
            a: int

            def _make(self) -> None:  # type: ignore[override]
                pass


def test_event_union_is_the_events() -> None:
    assert typing.get_args(events.Event) == events._EVENT_TYPES
    assert set(events._EVENT_TYPES) == {getattr(events, n) for n in events.__all__ if n != "Event"}


LAZY_PROBE = r"""
import sys
import vastar_fast
from vastar_fast import HTTPRequest, HTTPResponse, RuntimeConfig, HealthStatus
from vastar_fast.client.endpoint import Endpoint
r = HTTPRequest("GET", "u")
out = [repr(r), r == HTTPRequest("GET", "u"), repr(Endpoint()), hash(Endpoint()) == hash(Endpoint())]
out.append("dataclasses" in sys.modules)
import dataclasses
out.append(dataclasses.is_dataclass(r))
out.append([f.name for f in dataclasses.fields(HealthStatus)])
out.append(type(vars(HTTPRequest)["__dataclass_fields__"]) is dict)
print(out)
"""


def test_dataclasses_is_imported_only_by_whoever_inspects_a_record() -> None:
    env = {"PYTHONPATH": SRC, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", LAZY_PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(
        [
            "HTTPRequest(method='GET', url='u', headers=None, body=None, timeout_ms=None, "
            "tenant_id=None, workspace_id=None, trace_id=None)",
            True,
            "Endpoint(path=None, host='127.0.0.1', port=5000)",
            True,
            False,
            True,
            ["healthy", "message", "active_requests", "available_credits", "supported"],
            True,
        ]
    )


def test_lazy_attributes_are_installed_once() -> None:
    dataclasses.fields(HTTPResponse)
    assert type(vars(HTTPResponse)["__dataclass_fields__"]) is dict
    assert not any(
        isinstance(v, _records._LazyDataclassAttribute) for v in vars(HTTPResponse).values()
    )


def test_methods_are_compiled_on_first_use_only() -> None:
    @record
    class Fresh:
        """Made here, first used below."""

        a: int
        b: str = "x"

    assert isinstance(vars(Fresh)["__init__"], _records._LazyMethod)
    assert Fresh.__hash__ is None  # set at once, not a compiled method
    assert getattr(Fresh, "__match_args__", ("a", "b")) == ("a", "b")  # 3.10+
    assert str(inspect.signature(Fresh)) == "(a: 'int', b: 'str' = 'x') -> None"
    assert not any(isinstance(v, _records._LazyMethod) for v in vars(Fresh).values())
    assert repr(Fresh(1)).endswith("<locals>.Fresh(a=1, b='x')")


@pytest.mark.parametrize("use", ["init", "repr", "eq", "hash", "setattr"])
def test_first_use_from_many_threads_at_once(use: str) -> None:
    @record(frozen=True)
    class Shared:
        """Used first by eight threads at once."""

        a: int

    one = object.__new__(Shared)
    object.__setattr__(one, "a", 1)  # an instance made without __init__, as _codec_c does
    actions = {
        "init": lambda: repr(Shared(1)),
        "repr": lambda: repr(one),
        "eq": lambda: one == one,
        "hash": lambda: hash(one),
        "setattr": lambda: _outcome(setattr, one, "a", 2),
    }
    barrier = threading.Barrier(8)
    results: List[object] = []

    def run() -> None:
        barrier.wait()
        results.append(actions[use]())

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all(r == results[0] for r in results), results
    assert not any(isinstance(v, _records._LazyMethod) for v in vars(Shared).values())
