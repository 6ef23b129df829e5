"""Reading pickled parameters (Heron's editor sends them) as plain data, and nothing else.

Python's unpickler runs whatever a pickle names: a pickle is a program. This reader is
not that unpickler: it walks the pickle's opcodes (:func:`pickletools.genops` only parses
them) and builds values itself, for the opcodes of plain data alone. It resolves no global
name, imports nothing and calls nothing, so only None, bool, int, float, str, bytes, list,
tuple, dict and set can come out, and complex, the one such type pickle writes through a
name: ``builtins.complex`` is recognised as text and built from two numbers here (and, from
protocols 2 and 3, ``builtins.set`` from a list). Every
other opcode (objects, classes, functions, extensions, persistent ids, out-of-band buffers)
is refused with an error that names it. Values nest at most MAX_DEPTH deep: hashing a tuple
nested a million deep (a dict key) overflows the C stack, and JSON cannot write one either.
"""

from __future__ import annotations

import pickletools
from typing import Any

from ..errors import DecodeError
from ..wire.bounded import PARAMETERS_MAX_BYTES

__all__ = ["MAX_BYTES", "MAX_DEPTH", "PlainPickleError", "is_pickle", "load_plain"]

#: The largest pickle read: a node's parameters are a few values.
MAX_BYTES = PARAMETERS_MAX_BYTES
#: How deep values may nest (lists in lists...).
MAX_DEPTH = 100
_PLAIN = "None, bool, int, float, complex, str, bytes, list, tuple, dict and set"
#: The only names a pickle may give, read as text: what plain types pickle writes through a name.
_NAMED_TYPES = {
    ("builtins", "complex"): complex,
    ("__builtin__", "complex"): complex,
    ("builtins", "set"): set,
    ("__builtin__", "set"): set,
}


class PlainPickleError(DecodeError):
    """A pickle that is not plain data (or not a pickle); the message names what it holds."""


class _Mark:
    """Where MARK put its mark on the stack."""


class _Named:
    """A plain type the pickle named (complex or set); built by REDUCE, from plain values only."""

    def __init__(self, kind: type) -> None:
        self.kind = kind


_MARK = _Mark()


def is_pickle(raw: bytes) -> bool:
    """Whether ``raw`` starts as a pickle of protocol 2 or later does (Heron's editor writes 4)."""
    return len(raw) >= 2 and raw[0] == 0x80 and raw[1] <= 5


def load_plain(raw: bytes, *, max_bytes: int = MAX_BYTES) -> Any:
    """The plain value pickled in ``raw``; PlainPickleError for anything else."""
    if len(raw) > max_bytes:
        raise PlainPickleError(f"a pickle of {len(raw)} bytes is over the {max_bytes}-byte cap")
    machine = _Machine()
    try:
        for opcode, arg, _pos in pickletools.genops(raw):
            if machine.step(opcode.name, arg):
                return machine.result
    except PlainPickleError:
        raise
    except Exception as exc:  # malformed (ValueError, IndexError, KeyError...), or an unhashable key
        raise PlainPickleError(f"not a pickle of plain data: {type(exc).__name__}: {str(exc)[:120]}") from exc
    raise PlainPickleError("the pickle has no STOP: it is cut short")


class _Machine:
    """The stack and memo of one pickle, for plain-data opcodes."""

    def __init__(self) -> None:
        self.stack: list[Any] = []
        self.memo: dict[int, Any] = {}
        self.result: Any = None
        # How deep tuples nest in each tuple built, by id (the tuple kept, so that its id stays its own).
        self._tuple_depths: dict[int, tuple[tuple[Any, ...], int]] = {}

    def push_tuple(self, items: list[Any]) -> None:
        """Push a tuple of ``items``, refused when tuples would nest deeper than MAX_DEPTH (before
        anything hashes it: hashing recurses in C, with no limit)."""
        value = tuple(items)
        known = self._tuple_depths
        depth = 1 + max((known[id(v)][1] for v in value if type(v) is tuple and id(v) in known), default=0)
        if depth > MAX_DEPTH:
            raise PlainPickleError(f"the pickle nests tuples more than {MAX_DEPTH} deep")
        known[id(value)] = (value, depth)
        self.stack.append(value)

    def pop_mark(self) -> list[Any]:
        """The items above the last mark, the mark removed."""
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is _MARK:
                items = self.stack[i + 1 :]
                del self.stack[i:]
                return items
        raise PlainPickleError("the pickle pops a mark it never set")

    def step(self, name: str, arg: Any) -> bool:
        """Carry out one opcode; True at STOP."""
        handler = _HANDLERS.get(name)
        if handler is None:
            raise PlainPickleError(f"the pickle holds more than plain data (opcode {name}): only {_PLAIN} are accepted")
        return bool(handler(self, arg))


def _push(value: Any) -> Any:
    return lambda m, arg: m.stack.append(value)


def _push_arg(m: _Machine, arg: Any) -> None:
    m.stack.append(arg)


def _stop(m: _Machine, arg: Any) -> bool:
    m.result = m.stack.pop()
    _check_values(m.result)
    return True


def _check_values(value: Any) -> None:
    """Refuse a result that holds a name or a mark instead of a value (a pickle built by hand), or
    that nests deeper than MAX_DEPTH (a list that holds itself does)."""
    deepest: dict[int, int] = {}  # how deep each container was seen: seen deeper, it is walked again
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, _Named) or item is _MARK:
            raise PlainPickleError("the pickle holds a name where a value belongs")
        if isinstance(item, (list, tuple, set, dict)) and deepest.get(id(item), -1) < depth:
            if depth > MAX_DEPTH:
                raise PlainPickleError(f"the pickle nests values more than {MAX_DEPTH} deep")
            deepest[id(item)] = depth
            inside = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            todo.extend((v, depth + 1) for v in inside)


def _global(m: _Machine, arg: Any) -> None:
    module, _, name = str(arg).partition(" ")
    _name(m, module, name)


def _stack_global(m: _Machine, arg: Any) -> None:
    name, module = m.stack.pop(), m.stack.pop()
    _name(m, str(module), str(name))


def _name(m: _Machine, module: str, name: str) -> None:
    kind = _NAMED_TYPES.get((module, name))
    if kind is None:
        raise PlainPickleError(
            f"the pickle names the global {module}.{name}: only {_PLAIN} are accepted, nothing is looked up or run"
        )
    m.stack.append(_Named(kind))


def _reduce(m: _Machine, arg: Any) -> None:
    args, func = m.stack.pop(), m.stack.pop()
    if isinstance(func, _Named) and type(args) is tuple:
        if func.kind is complex and len(args) <= 2 and all(type(a) in (int, float) for a in args):
            m.stack.append(complex(*args))
            return
        if func.kind is set and len(args) == 1 and type(args[0]) is list:
            _check_values(args[0])
            m.stack.append(set(args[0]))
            return
    raise PlainPickleError(f"the pickle calls something: only {_PLAIN} are accepted")


def _append(m: _Machine, arg: Any) -> None:
    value = m.stack.pop()
    _list_below(m).append(value)


def _appends(m: _Machine, arg: Any) -> None:
    items = m.pop_mark()
    _list_below(m).extend(items)


def _list_below(m: _Machine) -> list[Any]:
    target = m.stack[-1]
    if type(target) is not list:
        raise PlainPickleError(f"the pickle appends to a {type(target).__name__}")
    return target


def _setitem(m: _Machine, arg: Any) -> None:
    value, key = m.stack.pop(), m.stack.pop()
    _dict_below(m)[key] = value


def _setitems(m: _Machine, arg: Any) -> None:
    items = m.pop_mark()
    target = _dict_below(m)
    for k in range(0, len(items) - 1, 2):
        target[items[k]] = items[k + 1]


def _dict_below(m: _Machine) -> dict[Any, Any]:
    target = m.stack[-1]
    if type(target) is not dict:
        raise PlainPickleError(f"the pickle sets an item of a {type(target).__name__}")
    return target


def _additems(m: _Machine, arg: Any) -> None:
    items = m.pop_mark()
    target = m.stack[-1]
    if type(target) is not set:
        raise PlainPickleError(f"the pickle adds to a {type(target).__name__}")
    target.update(items)


def _tuple_of(n: int) -> Any:
    def build(m: _Machine, arg: Any) -> None:
        items = m.stack[len(m.stack) - n :] if n else []
        del m.stack[len(m.stack) - n :]
        m.push_tuple(items)

    return build


def _put(m: _Machine, arg: Any) -> None:
    m.memo[int(arg)] = m.stack[-1]


def _memoize(m: _Machine, arg: Any) -> None:
    m.memo[len(m.memo)] = m.stack[-1]


def _get(m: _Machine, arg: Any) -> None:
    m.stack.append(m.memo[int(arg)])


def _dict_from_mark(m: _Machine, arg: Any) -> None:
    items = m.pop_mark()
    m.stack.append({items[k]: items[k + 1] for k in range(0, len(items) - 1, 2)})


_HANDLERS: dict[str, Any] = {
    "PROTO": lambda m, arg: None,
    "FRAME": lambda m, arg: None,
    "STOP": _stop,
    "NONE": _push(None),
    "NEWTRUE": _push(True),
    "NEWFALSE": _push(False),
    # Scalars: pickletools has decoded the argument already.
    **dict.fromkeys(("INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"), _push_arg),
    **dict.fromkeys(("FLOAT", "BINFLOAT"), _push_arg),
    **dict.fromkeys(("STRING", "BINSTRING", "SHORT_BINSTRING"), _push_arg),
    **dict.fromkeys(("UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"), _push_arg),
    **dict.fromkeys(("BINBYTES", "SHORT_BINBYTES", "BINBYTES8"), _push_arg),
    # Containers.
    "EMPTY_LIST": lambda m, arg: m.stack.append([]),
    "APPEND": _append,
    "APPENDS": _appends,
    "LIST": lambda m, arg: m.stack.append(m.pop_mark()),
    "EMPTY_TUPLE": _tuple_of(0),
    "TUPLE1": _tuple_of(1),
    "TUPLE2": _tuple_of(2),
    "TUPLE3": _tuple_of(3),
    "TUPLE": lambda m, arg: m.push_tuple(m.pop_mark()),
    "EMPTY_DICT": lambda m, arg: m.stack.append({}),
    "SETITEM": _setitem,
    "SETITEMS": _setitems,
    "DICT": _dict_from_mark,
    "EMPTY_SET": lambda m, arg: m.stack.append(set()),
    "ADDITEMS": _additems,
    # The stack and the memo.
    "MARK": lambda m, arg: m.stack.append(_MARK),
    "POP": lambda m, arg: m.stack.pop(),
    "POP_MARK": lambda m, arg: m.pop_mark(),
    "DUP": lambda m, arg: m.stack.append(m.stack[-1]),
    **dict.fromkeys(("PUT", "BINPUT", "LONG_BINPUT"), _put),
    "MEMOIZE": _memoize,
    **dict.fromkeys(("GET", "BINGET", "LONG_BINGET"), _get),
    # complex, named as text: see the module's docstring.
    "GLOBAL": _global,
    "STACK_GLOBAL": _stack_global,
    "REDUCE": _reduce,
}
