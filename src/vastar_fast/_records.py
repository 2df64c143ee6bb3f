"""Dataclasses and NamedTuples made without importing ``dataclasses`` or ``typing``.

``import dataclasses`` imports inspect, ast, dis, tokenize and re, ``import typing``
re and contextlib: together about half of what ``import vastar_fast`` cost (15 of 29
ms), for five small classes and seventeen NamedTuples. The modules on the import path therefore
write::

    TYPE_CHECKING = False
    if TYPE_CHECKING:
        from dataclasses import dataclass as record, field
        from typing import NamedTuple
    else:
        from ._records import NamedTuple, field, record

so that type checkers see the real ``dataclasses.dataclass`` and ``typing.NamedTuple``
and the one class body stays the only definition of the fields.

:func:`record` makes, from the class annotations, the methods ``dataclasses.dataclass``
would (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__`` and
``__delattr__`` when frozen, ``__match_args__`` on 3.10+, ``__replace__`` on 3.13+), with
the same code text as the running Python's ``dataclasses`` module, so signatures,
reprs, equality and hashing are the same. Compiling that text is most of what making a
dataclass costs (about 0.3 ms a class), so it is done when the class is first used: until
then each of those methods is a stand-in in the class ``__dict__`` whose first lookup
(``cls(...)``, ``repr``, ``==``, ``hash``, ``inspect.signature``...) compiles and
installs them all; ``__hash__ = None`` (not frozen) and ``__match_args__`` are set at
once. ``__dataclass_fields__`` and ``__dataclass_params__`` are lazy class attributes:
the first access (``is_dataclass``, ``fields``, ``replace``, ``asdict``, ``astuple`` all
start with one) imports ``dataclasses``, applies the real decorator to a copy of the
class body and installs its ``Field`` objects and parameters on the class, so those
functions see a real dataclass.
Only what the package's own records use is supported (``frozen``, ``field(default=...)``
and ``field(default_factory=...)``, no base classes); anything else is a ``TypeError``
at class creation, never a silent difference. tests/test_records.py compares each record
with the real dataclass built from the same body.

:data:`NamedTuple` is ``typing.NamedTuple``'s class syntax over ``collections.namedtuple``
(what typing itself calls): same fields, defaults, docstring, methods, ``__module__``
and ``__annotations__`` (kept as written: strings under ``from __future__ import
annotations``, where typing wraps them in ``ForwardRef``).

No ``from __future__ import annotations`` here: the generated ``__init__``'s annotations
must be the field types themselves, as in ``dataclasses``.
"""

import sys
from _thread import allocate_lock, get_ident
from collections import namedtuple as _namedtuple
from functools import wraps

__all__ = ["NamedTuple", "field", "record"]

_NO_DEFAULT = object()


class _HasDefaultFactory:
    """The ``__init__`` default of a default_factory field (``dataclasses`` shows it so)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<factory>"


_HAS_DEFAULT_FACTORY = _HasDefaultFactory()


class _FieldSpec:
    __slots__ = ("default", "default_factory")

    def __init__(self, default, default_factory):
        self.default = default
        self.default_factory = default_factory


def field(*, default=_NO_DEFAULT, default_factory=_NO_DEFAULT):
    """``dataclasses.field`` for :func:`record`: ``default`` or ``default_factory`` only."""
    if default is not _NO_DEFAULT and default_factory is not _NO_DEFAULT:
        raise ValueError("cannot specify both default and default_factory")
    return _FieldSpec(default, default_factory)


def _frozen_instance_error():
    from dataclasses import FrozenInstanceError  # only on the error path

    return FrozenInstanceError


def _recursive_repr(fn):
    """What ``dataclasses`` wraps ``__repr__`` in: ``...`` for a recursive call."""
    running = set()

    @wraps(fn)
    def wrapper(self):
        key = id(self), get_ident()
        if key in running:
            return "..."
        running.add(key)
        try:
            result = fn(self)
        finally:
            running.discard(key)
        return result

    return wrapper


class _Spec:
    """What the lazy attributes need to build the methods and the real dataclass later."""

    __slots__ = ("annotations", "cls", "fields", "frozen", "made")

    def __init__(self, cls, annotations, fields, frozen, made):
        self.cls = cls
        self.annotations = annotations
        self.fields = fields  # [(name, type, default, default_factory)]
        self.frozen = frozen
        self.made = made  # the methods compiled on first use


_materialize_lock = allocate_lock()
_methods_lock = allocate_lock()


class _LazyMethod:
    """A record's method until the class is first used (an instance made, compared,
    printed; the method looked up): then all its methods are compiled and installed,
    and this stand-in is gone from the class."""

    __slots__ = ("name", "spec")

    def __init__(self, spec, name):
        self.spec = spec
        self.name = name

    def __get__(self, obj, owner=None):
        _build_methods(self.spec)
        return self.spec.cls.__dict__[self.name].__get__(obj, owner)


_OWN_METHODS = ("__init__", "__repr__", "__eq__", "__setattr__", "__delattr__", "__replace__")


class _LazyDataclassAttribute:
    """``__dataclass_fields__`` / ``__dataclass_params__`` until first read: then the
    real dataclass's, installed on the class in place of this descriptor."""

    __slots__ = ("name", "spec")

    def __init__(self, spec, name):
        self.spec = spec
        self.name = name

    def __get__(self, obj, owner=None):
        cls = self.spec.cls
        _materialize(self.spec)
        return cls.__dict__[self.name]


def _materialize(spec):
    import dataclasses  # the caller is inspecting a dataclass: it has imported this

    cls = spec.cls
    with _materialize_lock:
        if not isinstance(cls.__dict__.get("__dataclass_fields__"), _LazyDataclassAttribute):
            return  # another thread did it
        ns = {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "__doc__": cls.__doc__,
            "__annotations__": dict(spec.annotations),
        }
        for name, _, default, factory in spec.fields:
            if factory is not _NO_DEFAULT:
                ns[name] = dataclasses.field(default_factory=factory)
            elif default is not _NO_DEFAULT:
                ns[name] = dataclasses.field(default=default)
        shadow = dataclasses.dataclass(frozen=spec.frozen)(type(cls.__name__, (), ns))
        type.__setattr__(cls, "__dataclass_params__", shadow.__dataclass_params__)
        type.__setattr__(cls, "__dataclass_fields__", shadow.__dataclass_fields__)


def _class_annotations(cls):
    # the class's own, as dataclasses reads them (not inherited ones; no typing here)
    annotations = cls.__dict__.get("__annotations__")  # noqa: RUF063
    if annotations is None and "__annotate__" in cls.__dict__:  # 3.14, no future import
        annotations = cls.__annotations__
    return dict(annotations or {})


def _tuple_str(obj, names):
    if not names:
        return "()"
    return "(" + ",".join(f"{obj}.{name}" for name in names) + ",)"


def record(cls=None, /, *, frozen=False):
    """``dataclasses.dataclass`` (init, repr, eq; optionally frozen) without importing it."""

    def wrap(cls):
        return _process(cls, frozen)

    return wrap if cls is None else wrap(cls)


def _process(cls, frozen):
    if cls.__bases__ != (object,):
        raise TypeError(f"record {cls.__qualname__}: base classes need the real dataclass")
    for name in (*_OWN_METHODS, "__hash__", "__match_args__", "__dataclass_fields__"):
        if name in cls.__dict__ and not (name == "__hash__" and cls.__dict__[name] is None):
            raise TypeError(f"record {cls.__qualname__} defines {name}: use the real dataclass")
    if not cls.__doc__:
        raise TypeError(f"record {cls.__qualname__} needs a docstring (dataclasses makes one)")
    annotations = _class_annotations(cls)
    fields = []
    seen_default = False
    for name, type_ in annotations.items():
        text = type_ if isinstance(type_, str) else getattr(type_, "__name__", "")
        if "ClassVar" in text or "InitVar" in text or "KW_ONLY" in text:
            raise TypeError(f"record {cls.__qualname__}.{name}: use the real dataclass")
        value = cls.__dict__.get(name, _NO_DEFAULT)
        if isinstance(value, _FieldSpec):
            default, factory = value.default, value.default_factory
            if default is _NO_DEFAULT:
                if factory is not _NO_DEFAULT:
                    delattr(cls, name)  # as dataclasses: no class attribute
            else:
                setattr(cls, name, default)
        else:
            default, factory = value, _NO_DEFAULT
        if default is not _NO_DEFAULT and type(default).__hash__ is None:
            raise ValueError(
                f"mutable default {type(default)} for field {name} is not allowed: "
                "use default_factory"
            )
        if default is not _NO_DEFAULT or factory is not _NO_DEFAULT:
            seen_default = True
        elif seen_default:
            raise TypeError(f"non-default argument {name!r} follows default argument")
        fields.append((name, type_, default, factory))

    names = tuple(f[0] for f in fields)
    made = ["__init__", "__repr__", "__eq__"]
    if frozen:
        made += ["__setattr__", "__delattr__", "__hash__"]
    if sys.version_info >= (3, 13):
        made.append("__replace__")
    spec = _Spec(cls, annotations, fields, frozen, tuple(made))
    # the methods are compiled when the class is first used (compiling them is most of
    # what making a record costs): until then each is a _LazyMethod
    for name in made:
        setattr(cls, name, _LazyMethod(spec, name))
    if not frozen:
        cls.__hash__ = None  # eq without frozen: unhashable, as dataclasses makes it
    if sys.version_info >= (3, 10):
        setattr(cls, "__match_args__", names)  # noqa: B010 (mypy: a read-only name)
    cls.__dataclass_params__ = _LazyDataclassAttribute(spec, "__dataclass_params__")
    cls.__dataclass_fields__ = _LazyDataclassAttribute(spec, "__dataclass_fields__")
    return cls


def _build_methods(spec):
    """Compile the record's methods (the text of this Python's dataclasses) and put them
    on the class in place of the _LazyMethod stand-ins."""
    with _methods_lock:
        if not isinstance(spec.cls.__dict__.get("__init__"), _LazyMethod):
            return  # another thread did it
        _compile_methods(spec)


def _compile_methods(spec):
    cls, fields, frozen, made = spec.cls, spec.fields, spec.frozen, spec.made
    names = [f[0] for f in fields]
    locals_ = {
        "__dataclass_HAS_DEFAULT_FACTORY__": _HAS_DEFAULT_FACTORY,
        "__dataclass_builtins_object__": object,
        "__dataclass_return_type__": None,
        "__dataclass_frozen_error__": _frozen_instance_error,
        "cls": cls,
    }
    self_name = "__dataclass_self__" if "self" in names else "self"
    params, body = [], []
    for name, type_, default, factory in fields:
        locals_[f"__dataclass_type_{name}__"] = type_
        param = f"{name}:__dataclass_type_{name}__"
        value = name
        if factory is not _NO_DEFAULT:
            locals_[f"__dataclass_dflt_{name}__"] = factory
            param += "=__dataclass_HAS_DEFAULT_FACTORY__"
            value = f"__dataclass_dflt_{name}__() if {name} is __dataclass_HAS_DEFAULT_FACTORY__ else {name}"
        elif default is not _NO_DEFAULT:
            locals_[f"__dataclass_dflt_{name}__"] = default
            param += f"=__dataclass_dflt_{name}__"
        params.append(param)
        if frozen:
            body.append(f"__dataclass_builtins_object__.__setattr__({self_name},{name!r},{value})")
        else:
            body.append(f"{self_name}.{name}={value}")
    if hasattr(cls, "__post_init__"):
        body.append(f"{self_name}.__post_init__()")

    src = [f" def __init__({','.join([self_name, *params])})->__dataclass_return_type__:"]
    src += [f"  {line}" for line in body or ["pass"]]
    fields_repr = ", ".join(f"{name}={{self.{name}!r}}" for name in names)
    src += [" def __repr__(self):", f'  return self.__class__.__qualname__ + f"({fields_repr})"']
    src += [" def __eq__(self, other):"]
    if sys.version_info >= (3, 13):  # field by field, identity first (3.13's dataclasses)
        compare = " and ".join(f"self.{n}==other.{n}" for n in names) or "True"
        src += ["  if self is other:", "   return True"]
    else:
        compare = f"{_tuple_str('self', names)}=={_tuple_str('other', names)}"
    src += ["  if other.__class__ is self.__class__:", f"   return {compare}"]
    src += ["  return NotImplemented"]
    if frozen:
        if sys.version_info >= (3, 13):
            condition = "type(self) is cls"
            if names:
                condition += " or name in {" + ", ".join(repr(n) for n in names) + "}"
        else:
            condition = f"type(self) is cls or name in {_tuple_str_repr(names)}"
        for method, args, verb, call in (
            ("__setattr__", "self, name, value", "assign to", "__setattr__(name, value)"),
            ("__delattr__", "self, name", "delete", "__delattr__(name)"),
        ):
            src += [
                f" def {method}({args}):",
                f"  if {condition}:",
                f'   raise __dataclass_frozen_error__()(f"cannot {verb} field {{name!r}}")',
                f"  super(cls, self).{call}",
            ]
        src += [" def __hash__(self):", f"  return hash({_tuple_str('self', names)})"]
    if sys.version_info >= (3, 13):
        src += [
            " def __replace__(self, /, **changes):",
            "  from dataclasses import replace",
            "  return replace(self, **changes)",
        ]
    text = "\n".join(src)
    text = f"def __create_fn__({', '.join(locals_)}):\n{text}\n return {', '.join(made)},"
    module = sys.modules.get(cls.__module__)
    globals_ = module.__dict__ if module is not None else {}
    ns = {}
    code = compile(text, f"<record {cls.__qualname__}>", "exec", dont_inherit=True)
    exec(code, globals_, ns)
    for name, fn in zip(made, ns["__create_fn__"](**locals_)):
        if sys.version_info >= (3, 10):  # 3.9's dataclasses leaves __create_fn__'s
            fn.__qualname__ = f"{cls.__qualname__}.{fn.__name__}"
        if name == "__repr__":
            fn = _recursive_repr(fn)
        type.__setattr__(cls, name, fn)


def _tuple_str_repr(names):
    if not names:
        return "()"
    return "(" + ",".join(repr(n) for n in names) + ",)"


# ----------------------------------------------------------------------- NamedTuple

_PROHIBITED = frozenset(
    {
        "__new__",
        "__init__",
        "__slots__",
        "__getnewargs__",
        "_fields",
        "_field_defaults",
        "_make",
        "_replace",
        "_asdict",
        "_source",
    }
)
_SPECIAL = frozenset({"__module__", "__name__", "__annotations__"})


class _NamedTupleMeta(type):
    def __new__(mcls, typename, bases, ns):
        if not bases:  # NamedTuple itself
            return super().__new__(mcls, typename, bases, ns)
        if bases != (NamedTuple,):
            raise TypeError("can only inherit from a NamedTuple type")
        types = ns.get("__annotations__")
        if types is None:  # 3.14 without the future import
            annotate = ns.get("__annotate__")
            types = annotate(1) if annotate is not None else {}
        default_names = []
        for name in types:
            if name in ns:
                default_names.append(name)
            elif default_names:
                raise TypeError(
                    f"Non-default namedtuple field {name} cannot follow default field"
                    f"{'s' if len(default_names) > 1 else ''} {', '.join(default_names)}"
                )
        nm_tpl = _namedtuple(
            typename,
            list(types),
            defaults=[ns[n] for n in default_names],
            module=ns["__module__"],
        )
        nm_tpl.__annotations__ = nm_tpl.__new__.__annotations__ = dict(types)
        for key in ns:
            if key in _PROHIBITED:
                raise AttributeError("Cannot overwrite NamedTuple attribute " + key)
            if key not in _SPECIAL and key not in nm_tpl._fields and key != "__annotate__":
                setattr(nm_tpl, key, ns[key])
        return nm_tpl


class NamedTuple(metaclass=_NamedTupleMeta):
    """``class X(NamedTuple): a: int`` makes ``collections.namedtuple("X", ["a"])``, as
    ``typing.NamedTuple`` does (class syntax only)."""
