"""Traced programs kept across processes: the program store, beside the compile cache.

JAX's persistent compilation cache (`retland.core.jaxcache`) saves XLA's work, but every
new process still *traces* its programs in Python first, and for a vmapped 1000-step
brax rollout that is most of the start-up (10-20 s on a 2-core CPU). The store keeps the
traced program itself: on a miss `StoredJit` traces the function once, exports it with
`jax.export` (StableHLO plus its calling convention) and writes it to the store; a later
process with the same key deserializes it and runs it through
`jax.jit(exported.call)`, so it skips tracing and still compiles through the persistent
compilation cache. The exported program is the traced one, lowered once: both compute
the same thing (tests/cli/test_startup.py checks rows bit for bit against a traced run).

Key. An entry is used only by a call that would have traced the same program:
- the function's identity: a value (here the engine's `SampleProgram`, a frozen
  dataclass of env, backend, variant, horizon, policy, make_params and noises) described
  field by field (`describe`); values it cannot describe exactly (closures, lambdas,
  arbitrary objects) make the program unstorable and it is traced as before;
- the arguments: their tree structure (node types and static data) and every leaf's
  shape, dtype and weak type, which fix the chunk size B;
- the platform and device kind the program runs on;
- the versions of Python, jax, jaxlib, brax, flax, optax, numpy, mujoco and MuJoCo
  Playground, and the jax settings that change what tracing produces (x64, PRNG);
- retland's own code: the sha256 of every source file of retland/core, retland/purd and
  retland/agents, plus the source file of the module of every class or function the
  identity names (an analysis's parameter function, a policy class), and of the module
  of every import path in it ("package.module:function": a user's policy or update).
  A name whose module has no readable source file makes the program unstorable.
  Code a user module imports from elsewhere is not hashed: change its module file (or
  clear the store) after editing such a helper.
Values kept with `stored_value` (the reference state s0, an env's dims) and the shapes
kept with `stored_shapes` (the agent state a checkpoint restores into) are keyed the
same way.

Files. One file per entry, `<sha256 of the key>.rlp`, under `default_path()`:
$RETLAND_PROGRAM_CACHE when it names a folder, else `programs/` next to the compile
cache ($RETLAND_JAX_CACHE, else ~/.cache/retland/jax). RETLAND_PROGRAM_CACHE=0 (or off,
false, no) turns the store off: every process traces, as before. An entry is written to
a temporary file and renamed into place, so readers see whole files; it holds its full
key and a checksum, and an entry that cannot be read, is damaged or was written for
another key is ignored and rewritten: never an error. A hit touches its entry; past
`MAX_ENTRIES` entries the least recently used are deleted (code edits make new keys, so
old entries pile up in a development tree). Deleting the folder is always safe.

Saving a program needs the `flatbuffers` package (jax's serializer); without it the
store is off and `stats()["reason"]` says so.

Devices. Programs are exported for one device and called with inputs committed to any
device of the platform, so the engine's chunk j on device j mod D runs the same
exported program on each device (`jax.export` allows a 1-device program anywhere).

`stats()` reports what this process did (hits, misses, stores, ignored entries, traced
calls, when the first program was dispatched); with RETLAND_PROGRAM_STATS=FILE the
process writes them there as JSON when it exits.
"""
from __future__ import annotations

import atexit
import enum
import functools
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import os
import sys
import tempfile
import time
import types
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from retland.core import jaxcache

ENV_VAR = "RETLAND_PROGRAM_CACHE"
STATS_ENV_VAR = "RETLAND_PROGRAM_STATS"
OFF = ("0", "off", "false", "no")
ON = ("", "1", "on", "true", "yes")
FORMAT = 1  # layout of an entry file and of its key
MAGIC = b"retland-program-store\n"
SUFFIX = ".rlp"
MAX_ENTRIES = 500  # a 1000-step rollout's entry is ~0.2 MB
# retland's code a chunk program depends on: every source file under these packages.
CODE_PACKAGES = ("core", "purd", "agents")
# Distributions whose version is part of every key; their modules' files are not hashed.
VERSIONED = ("jax", "jaxlib", "brax", "flax", "optax", "numpy", "mujoco", "mujoco-mjx", "playground",
             "ml_dtypes")
_VERSIONED_MODULES = {"jax", "jaxlib", "brax", "flax", "optax", "numpy", "mujoco", "mujoco_playground",
                      "ml_dtypes", "chex", "etils"}
_RETLAND = Path(__file__).resolve().parents[1]


class Unstorable(Exception):
    """A program or value the store cannot key exactly; it is traced (computed) as usual."""


# ------------------------------------------------------------------------------ stats

_STATS_ZERO = {"hits": 0, "misses": 0, "stored": 0, "ignored": 0, "write_errors": 0, "traced": 0,
               "unstorable": 0, "value_hits": 0, "value_misses": 0}
_stats: dict[str, Any] = dict(_STATS_ZERO, first_dispatch=None, reason=None)


def stats() -> dict:
    """What the store did in this process: hits (programs loaded instead of traced),
    misses (traced and exported), stored (entries written), ignored (entries unreadable,
    damaged or of another key, rewritten), write_errors, traced (programs traced without
    the store: it is off, or the program is unstorable), unstorable, value_hits /
    value_misses (`stored_value`), first_dispatch (time.time() when this process's first
    stored or traced program call returned, i.e. its first chunk was dispatched), reason
    (why the last program was not stored), enabled and root."""
    root = default_path()
    return dict(_stats, enabled=root is not None and _serializer_reason() is None,
                root=None if root is None else str(root))


def reset_stats() -> None:
    """Zero the counters (tests; a long-lived process measuring one job)."""
    _stats.clear()
    _stats.update(_STATS_ZERO, first_dispatch=None, reason=None)


def _write_stats_at_exit() -> None:
    target = os.environ.get(STATS_ENV_VAR)
    if target:
        try:
            Path(target).write_text(json.dumps(stats(), indent=1, sort_keys=True))
        except OSError:
            pass


atexit.register(_write_stats_at_exit)


# ------------------------------------------------------------------------------ where

def default_path() -> Path | None:
    """The store's folder: $RETLAND_PROGRAM_CACHE if it names one, else `programs/` in
    the compile cache's folder (`jaxcache.default_path()`); None when the variable turns
    the store off (0, off, false, no)."""
    value = os.environ.get(ENV_VAR, "").strip()
    if value.lower() in OFF:
        return None
    if value.lower() in ON:
        return jaxcache.default_path() / "programs"
    return Path(value).expanduser()


@functools.lru_cache(maxsize=None)
def _serializer_reason() -> str | None:
    """None if jax.export can serialize here, else why not."""
    if importlib.util.find_spec("flatbuffers") is None:
        return "the flatbuffers package (needed by jax.export serialization) is not installed"
    return None


def _active_root() -> Path | None:
    root = default_path()
    if root is None:
        _stats["reason"] = f"{ENV_VAR} turns the program store off"
        return None
    reason = _serializer_reason()
    if reason is not None:
        _stats["reason"] = reason
        return None
    return root


# ------------------------------------------------------------------------------ keys

def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.lru_cache(maxsize=None)
def environment() -> dict:
    """What every key shares in this process: format, Python and package versions, the
    jax settings that change tracing, and the digest of retland's program code."""
    code = hashlib.sha256()
    for package in CODE_PACKAGES:
        for path in sorted((_RETLAND / package).rglob("*.py")):
            code.update(path.relative_to(_RETLAND).as_posix().encode() + b"\0")
            code.update(path.read_bytes() + b"\0")
    settings = {}
    for name in ("jax_enable_x64", "jax_default_prng_impl", "jax_threefry_partitionable",
                 "jax_default_matmul_precision", "jax_numpy_rank_promotion", "jax_numpy_dtype_promotion",
                 "jax_use_shardy_partitioner"):
        settings[name] = str(getattr(jax.config, name, None))
    return {"format": FORMAT, "python": sys.version.split()[0],
            "versions": {d: _version(d) for d in VERSIONED}, "jax_settings": settings,
            "retland_code": code.hexdigest()}


@functools.lru_cache(maxsize=None)
def module_digest(module: str) -> str:
    """sha256 of a module's source file; '' for modules covered by a version in the key
    (jax, brax, …, the standard library). Unstorable if it has no readable .py file."""
    top = module.split(".")[0]
    if top in _VERSIONED_MODULES or top in sys.stdlib_module_names or top == "builtins":
        return ""
    loaded = sys.modules.get(module)
    origin = getattr(loaded, "__file__", None)
    if origin is None:
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError) as exc:
            raise Unstorable(f"module {module} cannot be found ({exc})") from None
        origin = spec.origin if spec is not None else None
    if not origin or not str(origin).endswith(".py"):
        raise Unstorable(f"module {module} has no Python source file to hash")
    try:
        return _file_digest(Path(origin))
    except OSError as exc:
        raise Unstorable(f"module {module}: source {origin} cannot be read ({exc})") from None


def _import_path_module(text: str) -> str | None:
    """The module of an import path 'package.module:function', or None for other text."""
    from retland.core.importpath import PATH

    return text.partition(":")[0] if PATH.match(text) else None


def _name_of(obj) -> tuple[str, str]:
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname or module == "__main__":
        raise Unstorable(f"{obj!r} is not importable by name (a lambda, a nested or __main__ definition)")
    return module, qualname


def describe(value, modules: dict[str, str], depth: int = 0) -> str:
    """An exact text of `value` for a key; the modules it names (classes, functions,
    import paths) are added to `modules` with their source digests. Unstorable for
    anything else (closures, arbitrary objects)."""
    if depth > 64:
        raise Unstorable("value nested too deeply to describe")
    d = depth + 1
    if value is None or isinstance(value, (bool, int)) and not isinstance(value, enum.Enum):
        return repr(value)
    if isinstance(value, float):
        return f"float({value!r})"
    if isinstance(value, str):
        module = _import_path_module(value)
        if module is not None:
            modules[module] = module_digest(module)
        return repr(value)
    if isinstance(value, bytes):
        return f"bytes:{hashlib.sha256(value).hexdigest()}"
    if isinstance(value, enum.Enum):
        module, qualname = _name_of(type(value))
        modules[module] = module_digest(module)
        return f"{module}:{qualname}.{value.name}"
    if isinstance(value, (np.ndarray, np.generic)) or isinstance(value, jax.Array):
        arr = np.ascontiguousarray(np.asarray(value))
        if arr.dtype == object:
            raise Unstorable("an object array")
        return f"array({arr.dtype.str},{arr.shape},{hashlib.sha256(arr.tobytes()).hexdigest()})"
    if isinstance(value, type) or isinstance(value, (types.FunctionType, types.BuiltinFunctionType)):
        module, qualname = _name_of(value)
        modules[module] = module_digest(module)
        return f"<{module}:{qualname}>"
    if isinstance(value, functools.partial):
        return (f"partial({describe(value.func, modules, d)},{describe(value.args, modules, d)},"
                f"{describe(value.keywords, modules, d)})")
    if is_dataclass(value):
        module, qualname = _name_of(type(value))
        modules[module] = module_digest(module)
        # Fields left out of equality (compare=False) are labels, not part of what runs.
        body = ",".join(f"{f.name}={describe(getattr(value, f.name), modules, d)}" for f in fields(value)
                        if f.compare)
        return f"{module}:{qualname}({body})"
    if hasattr(type(value), "model_fields") and hasattr(value, "model_dump"):  # a pydantic model
        module, qualname = _name_of(type(value))
        modules[module] = module_digest(module)
        return f"{module}:{qualname}{json.dumps(value.model_dump(mode='json'), sort_keys=True)}"
    if isinstance(value, (tuple, list)):
        kind = type(value)
        if kind in (tuple, list):
            prefix = kind.__name__
        else:  # a NamedTuple or another subclass: its type is part of the value
            module, qualname = _name_of(kind)
            modules[module] = module_digest(module)
            prefix = f"{module}:{qualname}"
        return f"{prefix}[{','.join(describe(v, modules, d) for v in value)}]"
    if isinstance(value, dict):
        items = sorted((describe(k, modules, d), describe(v, modules, d)) for k, v in value.items())
        return "dict{" + ",".join(f"{k}:{v}" for k, v in items) + "}"
    if isinstance(value, (set, frozenset)):
        return f"set{{{','.join(sorted(describe(v, modules, d) for v in value))}}}"
    raise Unstorable(f"cannot describe a {type(value).__module__}.{type(value).__qualname__} exactly")


def structure_text(treedef) -> str:
    """A pytree structure as exact text: each node's type by module and name, its
    static data and its children. Unstorable when static data prints an address."""
    data = treedef.node_data()
    children = treedef.children()
    if data is None:
        return "*"
    kind, aux = data
    module, qualname = getattr(kind, "__module__", "?"), getattr(kind, "__qualname__", repr(kind))
    aux_text = repr(aux)
    if " at 0x" in aux_text or " object at " in aux_text:
        raise Unstorable(f"the static data of a {qualname} node prints a memory address")
    return f"{module}:{qualname}[{aux_text}]({','.join(structure_text(c) for c in children)})"


def _aval(x) -> tuple:
    a = jax.typeof(x)
    return tuple(int(n) for n in a.shape), str(a.dtype), bool(getattr(a, "weak_type", False))


def _platform(leaves) -> tuple[str, str]:
    """(platform, device kind) the arguments will run on: the first committed jax
    array's device, else the default device."""
    device = None
    for x in leaves:
        if isinstance(x, jax.Array) and getattr(x, "committed", False):
            devices = x.devices()
            if len(devices) == 1:
                device = next(iter(devices))
                break
    device = device or jax.devices()[0]
    return export_platform(device), getattr(device, "device_kind", "")


def export_platform(device) -> str:
    """jax.export's name of a device's platform. JAX calls every GPU "gpu", jax.export
    wants "cuda" or "rocm": a program exported for "gpu" cannot be called on a CUDA
    device (seen on an H200 with jax 0.11)."""
    if device.platform != "gpu":
        return device.platform
    version = str(getattr(getattr(device, "client", None), "platform_version", "")).lower()
    return "rocm" if "rocm" in version or "hip" in version else "cuda"


def _key_text(kind: str, identity_text: str, modules: dict[str, str], extra: dict) -> str:
    return json.dumps({"kind": kind, "environment": environment(), "identity": identity_text,
                       "modules": modules, **extra}, sort_keys=True)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- files

def _entry_path(root: Path, digest: str) -> Path:
    return root / f"{digest}{SUFFIX}"


def _write(root: Path, digest: str, key: str, meta: dict, payload: bytes) -> None:
    header = json.dumps({"format": FORMAT, "key": key, "meta": meta, "size": len(payload),
                         "sha256": hashlib.sha256(payload).hexdigest()}).encode()
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-", suffix=".part")
        with os.fdopen(fd, "wb") as f:
            f.write(MAGIC + len(header).to_bytes(8, "little") + header + payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, _entry_path(root, digest))
        tmp = None
        _stats["stored"] += 1
        _prune(root)
    except OSError:
        _stats["write_errors"] += 1
    finally:
        if tmp is not None:
            _unlink(Path(tmp))


def _prune(root: Path, keep: int | None = None) -> None:
    """Delete the least recently used entries beyond `keep` (MAX_ENTRIES), and partial
    files an interrupted writer left more than an hour ago."""
    keep = MAX_ENTRIES if keep is None else keep
    found = []
    now = time.time()
    for path in root.iterdir():
        try:
            mtime = path.stat().st_mtime
        except OSError:
            continue
        if path.suffix == SUFFIX:
            found.append((mtime, path))
        elif path.name.startswith(".tmp-") and now - mtime > 3600:
            _unlink(path)
    for _, path in sorted(found)[:max(0, len(found) - keep)]:
        _unlink(path)


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass


def _read(root: Path, digest: str, key: str) -> tuple[dict, bytes] | None:
    """(meta, payload) of the entry for `key`, or None when absent or unusable."""
    path = _entry_path(root, digest)
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        _stats["ignored"] += 1
        return None
    try:
        if not blob.startswith(MAGIC):
            raise ValueError("not an entry")
        at = len(MAGIC)
        n = int.from_bytes(blob[at:at + 8], "little")
        header = json.loads(blob[at + 8:at + 8 + n])
        payload = blob[at + 8 + n:]
        if (header["format"] != FORMAT or header["key"] != key or header["size"] != len(payload)
                or header["sha256"] != hashlib.sha256(payload).hexdigest()):
            raise ValueError("damaged or of another key")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        _stats["ignored"] += 1
        return None
    try:
        os.utime(path)  # recently used: kept by `_prune`
    except OSError:
        pass
    return header["meta"], payload


# ------------------------------------------------------------------------ tree specs

def _tree_spec(treedef) -> dict:
    """JSON of an output structure made of tuples, lists, dicts, None and named tuples."""
    data = treedef.node_data()
    if data is None:
        return {"t": "leaf"}
    kind, aux = data
    children = [_tree_spec(c) for c in treedef.children()]
    if kind is tuple or kind is list:
        return {"t": kind.__name__, "c": children}
    if kind is type(None):
        return {"t": "none"}
    if kind is dict:
        if not all(isinstance(k, str) for k in aux):
            raise Unstorable("an output dict with non-string keys")
        return {"t": "dict", "keys": list(aux), "c": children}
    if issubclass(kind, tuple) and hasattr(kind, "_fields"):
        module, qualname = _name_of(kind)
        return {"t": "namedtuple", "cls": f"{module}:{qualname}", "c": children}
    raise Unstorable(f"an output node of type {kind.__qualname__}")


def _spec_example(spec: dict):
    t = spec["t"]
    if t == "leaf":
        return 0
    if t == "none":
        return None
    children = [_spec_example(c) for c in spec.get("c", [])]
    if t == "tuple":
        return tuple(children)
    if t == "list":
        return children
    if t == "dict":
        return dict(zip(spec["keys"], children))
    module, _, qualname = spec["cls"].partition(":")
    cls = importlib.import_module(module)
    for part in qualname.split("."):
        cls = getattr(cls, part)
    return cls(*children)


# ---------------------------------------------------------------------- stored values

_REAL: dict[str, Callable[[], Any]] = {}  # stored value key digest -> compute()


class StoredValue:
    """A pytree of arrays kept in the store (`stored_value`): its leaves and its
    structure as text. It is a pytree node itself, so `jax.device_put` places its leaves;
    `StoredJit` passes the leaves to a stored program and rebuilds the real tree only
    when it must trace."""

    def __init__(self, leaves, structure: str, digest: str):
        self.leaves, self.structure, self.digest = list(leaves), structure, digest

    def tree(self):
        """The real pytree with these leaves (computes the value once per process for
        its structure)."""
        treedef = _real_structure(self.digest)
        if treedef.num_leaves != len(self.leaves):
            raise ValueError("stored value does not match its computed structure")
        return jax.tree.unflatten(treedef, self.leaves)


jax.tree_util.register_pytree_node(
    StoredValue, lambda v: (v.leaves, (v.structure, v.digest)),
    lambda aux, leaves: StoredValue(leaves, *aux))


@functools.lru_cache(maxsize=None)
def _real_structure(digest: str):
    return jax.tree.structure(_REAL[digest]())


def _value_key(kind: str, identity) -> tuple[Path | None, str | None]:
    """(store root, key text) of a stored value or tree of shapes, or (root, None) when
    the store is off or `identity` cannot be keyed."""
    root = _active_root()
    if root is None:
        return None, None
    try:
        modules: dict[str, str] = {}
        text = describe(identity, modules)
        platform, device_kind = _platform([])
        return root, _key_text(kind, text, modules, {"platform": platform, "device_kind": device_kind})
    except Unstorable:
        return root, None


def stored_value(identity, compute: Callable[[], Any]):
    """compute() (a pytree of host arrays), kept in the store under `identity` (described
    like a program's, with the platform): a `StoredValue` standing for it, or the value
    itself when the store is off or the value cannot be keyed. The value must be a pure
    function of `identity` and the code."""
    root, key = _value_key("value", identity)
    if key is None:
        return compute()
    digest = _digest(key)
    once = functools.lru_cache(maxsize=None)(compute)
    _REAL.setdefault(digest, once)
    found = _read(root, digest, key)
    if found is not None:
        meta, payload = found
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as arrays:
                leaves = [arrays[f"a{i}"] for i in range(int(meta["leaves"]))]
            _stats["value_hits"] += 1
            return StoredValue(leaves, meta["structure"], digest)
        except (ValueError, KeyError, OSError, EOFError):
            _stats["ignored"] += 1
    _stats["value_misses"] += 1
    value = once()
    leaves, treedef = jax.tree.flatten(value)
    try:
        structure = structure_text(treedef)
    except Unstorable:
        return value
    leaves = [np.asarray(x) for x in leaves]
    buffer = io.BytesIO()
    np.savez(buffer, **{f"a{i}": x for i, x in enumerate(leaves)})
    _write(root, digest, key, {"leaves": len(leaves), "structure": structure}, buffer.getvalue())
    return StoredValue(leaves, structure, digest)


def stored_shapes(identity, compute: Callable[[], Any]):
    """compute() (a pytree of `jax.ShapeDtypeStruct`s, e.g. from `jax.eval_shape`), kept
    in the store under `identity` (keyed like `stored_value`) as its structure and leaf
    shapes, so a later process skips tracing it. Computed as usual when the store is off
    or the tree has nodes the store cannot name (only tuples, lists, dicts, None and named
    tuples are kept)."""
    root, key = _value_key("shapes", identity)
    if key is None:
        return compute()
    digest = _digest(key)
    found = _read(root, digest, key)
    if found is not None:
        meta, _ = found
        try:
            treedef = jax.tree.structure(_spec_example(meta["tree"]))
            leaves = [jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype)) for shape, dtype in meta["leaves"]]
            value = jax.tree.unflatten(treedef, leaves)
            _stats["value_hits"] += 1
            return value
        except (ValueError, KeyError, TypeError, ImportError, AttributeError):
            _stats["ignored"] += 1
    _stats["value_misses"] += 1
    value = compute()
    leaves, treedef = jax.tree.flatten(value)
    try:
        tree = _tree_spec(treedef)
    except Unstorable:
        return value
    meta = {"tree": tree, "leaves": [[list(map(int, x.shape)), np.dtype(x.dtype).str] for x in leaves]}
    _write(root, digest, key, meta, b"")
    return value


def _real(arg):
    return arg.tree() if isinstance(arg, StoredValue) else arg


def _arg_structure(arg) -> str:
    if isinstance(arg, StoredValue):
        return arg.structure
    return structure_text(jax.tree.structure(arg))


# --------------------------------------------------------------------------- programs

class StoredJit:
    """`jax.jit(fn)` whose traced programs are kept in the store.

    `identity` is a value that fixes what fn computes besides its arguments (for the
    engine's chunk function: the SampleProgram and the per_step flag); fn must be a
    pure function of `identity`, its arguments and retland's code. Call it like the
    jitted function; arguments may hold `StoredValue`s. Each new argument signature
    (structure, shapes, dtypes) is looked up once per process: a stored program is
    loaded, else fn is traced, exported and stored; a program the store cannot key is
    traced by plain `jax.jit(fn)`, as are all programs when the store is off."""

    def __init__(self, fn: Callable, identity, *, name: str = "program"):
        self.fn, self.identity, self.name = fn, identity, name
        self._traced: Callable | None = None
        self._calls: dict[Any, Callable] = {}
        self._proven: set = set()  # signatures whose stored program has run once
        self._identity_key: tuple[str, dict] | Unstorable | None = None

    def traced(self) -> Callable:
        """The plain `jax.jit(fn)` (what runs when nothing is stored)."""
        if self._traced is None:
            self._traced = jax.jit(self.fn)
        return self._traced

    def _call_for(self, args) -> tuple[Any, list, Callable]:
        """(signature, leaves, call) of these arguments; the call is prepared (loaded,
        exported or traced) at the signature's first use."""
        leaves, treedef = jax.tree.flatten(args)
        signature = (treedef, tuple(_aval(x) for x in leaves))
        call = self._calls.get(signature)
        if call is None:
            call = self._calls[signature] = self._prepare(args, leaves)
        return signature, leaves, call

    def __call__(self, *args):
        signature, leaves, call = self._call_for(args)
        if call == self._run_traced or signature in self._proven:
            out = call(args, leaves)
        else:
            try:  # the first call of a loaded or exported program lowers and compiles it
                out = call(args, leaves)
            except Exception as exc:  # noqa: BLE001 - e.g. a JAX that cannot call this export: trace instead
                _stats["traced"] += 1
                _stats["reason"] = f"{self.name}: the stored program failed ({type(exc).__name__}: {str(exc)[:200]})"
                call = self._calls[signature] = self._run_traced
                out = call(args, leaves)
            self._proven.add(signature)
        if _stats["first_dispatch"] is None:
            _stats["first_dispatch"] = time.time()
        return out

    def lower(self, *args):
        """The `jax.stages.Lowered` program a call with these arguments runs (the stored
        one when the store has it), e.g. to read its memory before running it
        (`retland.core.sizing.footprint`). Nothing runs."""
        signature, leaves, call = self._call_for(args)
        lower = getattr(call, "lower", None)
        if lower is not None:
            try:
                return lower(args, leaves)
            except Exception as exc:  # noqa: BLE001 - as in __call__: a stored program that fails is traced
                _stats["reason"] = f"{self.name}: the stored program failed to lower ({type(exc).__name__}: " \
                                   f"{str(exc)[:200]})"
                self._calls[signature] = self._run_traced
        return self.traced().lower(*(_real(a) for a in args))

    # -- building the call for one signature

    def _run_traced(self, args, leaves):
        return self.traced()(*(_real(a) for a in args))

    def _identity(self) -> tuple[str, dict]:
        if self._identity_key is None:
            try:
                modules: dict[str, str] = {}
                self._identity_key = (describe(self.identity, modules), modules)
            except Unstorable as exc:
                self._identity_key = exc
        if isinstance(self._identity_key, Unstorable):
            raise self._identity_key
        return self._identity_key

    def _key(self, args, leaves) -> tuple[str, list, str]:
        """(key text, argument avals, platform) of a call; Unstorable if it has none."""
        identity, modules = self._identity()
        avals = [_aval(x) for x in leaves]
        if any(weak for _, _, weak in avals):
            raise Unstorable("an argument is weakly typed (a Python scalar)")
        platform, device_kind = _platform(leaves)
        key = _key_text("jit", identity, modules, {
            "name": self.name, "platform": platform, "device_kind": device_kind,
            "arguments": [_arg_structure(a) for a in args], "avals": avals})
        return key, avals, platform

    def entry_path(self, *args) -> Path | None:
        """The store file a call with these arguments reads and writes (it need not
        exist); None when the store is off or the call cannot be keyed."""
        root = _active_root()
        if root is None:
            return None
        try:
            key, _, _ = self._key(args, jax.tree.leaves(args))
        except Unstorable:
            return None
        return _entry_path(root, _digest(key))

    def _prepare(self, args, leaves) -> Callable:
        root = _active_root()
        if root is None:
            _stats["traced"] += 1
            return self._run_traced
        try:
            key, avals, platform = self._key(args, leaves)
        except Unstorable as exc:
            _stats["unstorable"] += 1
            _stats["traced"] += 1
            _stats["reason"] = f"{self.name}: {exc}"
            return self._run_traced
        digest = _digest(key)
        found = _read(root, digest, key)
        if found is not None:
            call = self._load(found, len(leaves))
            if call is not None:
                _stats["hits"] += 1
                return call
        _stats["misses"] += 1
        return self._export(root, digest, key, args, avals, platform)

    def _load(self, found, n_leaves: int) -> Callable | None:
        meta, payload = found
        try:
            exported = jax.export.deserialize(bytearray(payload))
            out_tree = jax.tree.structure(_spec_example(meta["out"]))
            if len(exported.in_avals) != n_leaves or out_tree.num_leaves != len(exported.out_avals):
                raise ValueError("entry does not fit the call")
        except Exception:  # noqa: BLE001 - any unusable entry is ignored and rewritten
            _stats["ignored"] += 1
            return None
        return self._exported_call(exported, out_tree)

    def _exported_call(self, exported, out_tree) -> Callable:
        def stored(*flat):
            return exported.call(*flat)

        stored.__name__ = stored.__qualname__ = f"stored_{self.name}"
        jitted = jax.jit(stored)

        def call(args, leaves):
            return jax.tree.unflatten(out_tree, jitted(*leaves))

        call.lower = lambda args, leaves: jitted.lower(*leaves)
        return call

    def _export(self, root: Path, digest: str, key: str, args, avals, platform: str) -> Callable:
        real_args = tuple(_real(a) for a in args)
        real_leaves, real_treedef = jax.tree.flatten(real_args)
        if [_aval(x) for x in real_leaves] != avals:
            _stats["traced"] += 1
            _stats["reason"] = f"{self.name}: a stored value does not match its computed tree"
            return self._run_traced
        fn, box = self.fn, {}

        def flat(*xs):
            out = fn(*jax.tree.unflatten(real_treedef, xs))
            out_leaves, box["out"] = jax.tree.flatten(out)
            return tuple(out_leaves)

        flat.__name__ = flat.__qualname__ = self.name
        specs = [jax.ShapeDtypeStruct(shape, np.dtype(dtype)) for shape, dtype, _ in avals]
        try:
            exported = jax.export.export(jax.jit(flat), platforms=[platform])(*specs)
            spec = _tree_spec(box["out"])
            payload = bytes(exported.serialize())
        except Unstorable as exc:
            _stats["unstorable"] += 1
            _stats["traced"] += 1
            _stats["reason"] = f"{self.name}: {exc}"
            return self._run_traced
        except Exception as exc:  # noqa: BLE001 - not exportable: trace as before (user errors re-raise there)
            _stats["traced"] += 1
            _stats["reason"] = f"{self.name}: jax.export failed ({type(exc).__name__}: {str(exc)[:200]})"
            return self._run_traced
        _write(root, digest, key, {"out": spec, "name": self.name}, payload)
        return self._exported_call(exported, jax.tree.structure(_spec_example(spec)))
