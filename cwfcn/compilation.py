"""JAX's persistent compilation cache, which cwfcn's entry points turn on by default.

Compiling the clockwork engine for FCN-8s takes seconds per (schedule, frame shape);
with the cache, a later process loads the compiled executable from disk instead.
`train.py`, `evaluate.py`, `bench/schedules.py` and the notebook call `enable_cache()`; set
`CWFCN_COMPILATION_CACHE=0` to turn it off, or to a directory to put it there.

The cache is shared by every run on the machine (two terminals, a job array), so it is
bounded (`MAX_CACHE_BYTES`): with a bound, JAX evicts the least recently used entries and
takes a file lock (`filelock`) around each read and write, so that no run reads an entry
another is still writing. A run killed while writing leaves an entry with no access-time
file beside it (JAX writes that second); `enable_cache` drops those, or every later run
would warn that it cannot read the entry and compile it again, forever.

`Executables` compiles a jitted function ahead of time (`lower().compile()`), so that no
input is run just to compile it.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import filelock
import jax

from cwfcn.data import samples

CACHE_ENV = "CWFCN_COMPILATION_CACHE"
# Compiles shorter than this are not written: they cost more to store than to redo.
MIN_COMPILE_SECONDS = 0.5
MAX_CACHE_BYTES = 4 * 2**30  # a first run of evaluate.py writes about 0.5 GB
# JAX's layout of a cache directory (jax/_src/lru_cache.py, with a size bound): entries
# `<key>-cache`, each followed by `<key>-atime`, both written under `<dir>/.lockfile`.
_ENTRY, _ATIME, _LOCK = "-cache", "-atime", ".lockfile"
_LOCK_TIMEOUT_S = 10  # JAX's own wait for the lock


def cache_dir(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Where the cache goes: `$CWFCN_COMPILATION_CACHE` if a path, None if "0", else
    `<cwfcn cache>/jax` (see `samples.resolve_cache_dir`)."""
    setting = environ.get(CACHE_ENV, "")
    if setting == "0":
        return None
    if setting and setting != "1":
        return Path(setting).expanduser()
    return samples.resolve_cache_dir(None, environ) / "jax"


def enable_cache(environ: Mapping[str, str] = os.environ) -> Path | None:
    """Points JAX's persistent compilation cache at `cache_dir(environ)`.

    Returns:
      The directory in use, or None when turned off or not writable (then a one-line
      warning is printed and compiling simply is not cached).
    """
    path = cache_dir(environ)
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
        drop_unfinished(path)
    except OSError as error:  # filelock.Timeout too: a TimeoutError
        print(f"warning: no compilation cache ({error}); set {CACHE_ENV} to a writable "
              "directory, or to 0 to silence this", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    jax.config.update("jax_compilation_cache_max_size", MAX_CACHE_BYTES)
    return path


def drop_unfinished(path: Path) -> list[str]:
    """Deletes the entries of the cache at `path` that a killed run left half written (no
    access-time file beside them), under the lock JAX writes with. Entries written before
    the cache had a bound have none either: JAX keys those differently and never reads them.

    Returns:
      The names of the entries deleted.
    """
    dropped = []
    with filelock.FileLock(path / _LOCK, timeout=_LOCK_TIMEOUT_S):
        for entry in path.glob(f"*{_ENTRY}"):
            if not entry.with_name(entry.name.removesuffix(_ENTRY) + _ATIME).exists():
                entry.unlink(missing_ok=True)
                dropped.append(entry.name)
    return dropped


class Executables:
    """A jitted function compiled ahead of time, once per argument shapes and dtypes.

    `compile(*args)` lowers and compiles for the arguments' shapes (arrays or
    `jax.ShapeDtypeStruct`s) without running anything; calling runs the compiled
    executable, compiling first for shapes not met yet. Calling `jax.jit` directly
    would compile again: its dispatch cache does not hold executables compiled by
    `lower().compile()`. So a caller that must not run frames just to compile them
    (an evaluation timing its runs) compiles here, then calls.

    Attributes:
      compile_seconds: the time spent lowering and compiling so far.
    """

    def __init__(self, jitted, **static):
        """`jitted`: a `jax.jit` function; `static`: its static keyword arguments."""
        self._jitted, self._static = jitted, static
        self._compiled: dict[tuple, object] = {}
        self.compile_seconds = 0.0

    def compile(self, *args, **static):
        """The executable for `args`' shapes and dtypes (and the static keyword arguments
        `static`, with those given at construction), compiled now if it is new.

        Returns:
          The `jax.stages.Compiled`, whose `out_info` gives the outputs' shapes.
        """
        leaves, treedef = jax.tree.flatten(args)
        key = (treedef, tuple((tuple(x.shape), str(x.dtype)) for x in leaves),
               tuple(sorted(static.items())))
        if key not in self._compiled:
            start = time.perf_counter()
            self._compiled[key] = self._jitted.lower(*args, **self._static, **static).compile()
            self.compile_seconds += time.perf_counter() - start
        return self._compiled[key]

    def __call__(self, *args, **static):
        """Runs the compiled executable for `args` (static arguments are not passed to it)."""
        return self.compile(*args, **static)(*args)
