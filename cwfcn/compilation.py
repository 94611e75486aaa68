"""JAX's persistent compilation cache, which cwfcn's entry points turn on by default.

Compiling the clockwork engine for FCN-8s takes seconds per (schedule, frame shape);
with the cache, a later process loads the compiled executable from disk instead.
`train.py`, `evaluate.py`, `bench/schedules.py` and the notebook call `enable_cache()`; set
`CWFCN_COMPILATION_CACHE=0` to turn it off, or to a directory to put it there.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import jax

from cwfcn.data import samples

CACHE_ENV = "CWFCN_COMPILATION_CACHE"
# Compiles shorter than this are not written: they cost more to store than to redo.
MIN_COMPILE_SECONDS = 0.5


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
    except OSError as error:
        print(f"warning: no compilation cache ({error}); set {CACHE_ENV} to a writable "
              "directory, or to 0 to silence this", file=sys.stderr)
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    return path
