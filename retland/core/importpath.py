"""Functions named by import path, "package.module:function", so a later process can
find them again.

A user's policy (`apply`) and update function are stored in the warehouse by path, not
pickled: `retland sample` in another shell, or a resumed `sample_update` next week,
imports the same function by name. `function_path` turns a function object into its
path and refuses what no other process could import (lambdas, nested functions,
functions defined in the script being run); `resolve` imports a path back, with one
clear line for each way that can fail.
"""
from __future__ import annotations

import functools
import importlib
import re

# module (dotted) ":" attribute (dotted, e.g. Class.method)
PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def check_path(path: str, what: str = "function") -> str:
    """Refuse text that is not 'package.module:function' (ValueError, one line)."""
    if not isinstance(path, str) or not PATH.match(path):
        raise ValueError(f"{what} {path!r}: expected an import path 'package.module:function'")
    return path


@functools.lru_cache(maxsize=None)
def _resolve(path: str):
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"{path!r}: module {module_name!r} cannot be imported ({exc})") from None
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{path!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"{path!r}: {attr} is a {type(obj).__name__}, not a function")
    return obj


def resolve(path: str, what: str = "function"):
    """The callable at import path `path` (ValueError naming the problem otherwise).
    Imported once per process."""
    check_path(path, what)
    try:
        return _resolve(path)
    except ValueError as exc:
        raise ValueError(f"{what} {exc}") from None


def function_path(fn, what: str = "function") -> str:
    """'module:qualname' of an importable function, checked by importing it back; a
    string is checked and returned as given."""
    if isinstance(fn, str):
        resolve(fn, what)
        return fn
    if isinstance(fn, functools.partial):
        raise ValueError(f"{what} is a functools.partial: pass the function itself and its keywords separately")
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not callable(fn) or not module or not qualname:
        raise ValueError(f"{what} {fn!r} is not a function with a module and a name; pass 'package.module:function'")
    if "<lambda>" in qualname or "<locals>" in qualname:
        raise ValueError(f"{what} {qualname} is a lambda or a nested function, which another process cannot import; "
                         "define it at the top level of a module")
    if module == "__main__":
        raise ValueError(f"{what} {qualname} is defined in __main__ (the script being run), which another process "
                         "cannot import; put it in a module on sys.path and pass it or 'module:function'")
    path = f"{module}:{qualname}"
    found = resolve(path, what)
    if found is not fn and getattr(found, "__wrapped__", None) is not fn:
        raise ValueError(f"{what} {path}: importing it gives another object than the one passed; "
                         "pass 'package.module:function' of the function to store")
    return path
