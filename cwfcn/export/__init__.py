"""The clockwork step exported with `jax.export` (StableHLO): a deployable artefact that
carries its clock state and runs without the Python model code.

    export_step(net, "adaptive:0.25", (H, W, 3), "step.bin")      # or python -m cwfcn.export
    exported = load("step.bin")        # imports jax and numpy, never cwfcn.model
    state = exported.init()
    for frame in stream:                # float32 [H, W, 3], preprocessed (meta["mean_bgr"])
        state, scores, fired = exported.step(state, frame)

gives exactly what `Clockwork(net, schedule, dtype=dtype).step` gives on the same frames.

The step is `step(params, state, frame) -> (state, scores, fired)`:
- params: the net's parameter leaves (a tuple, cast to the compute dtype), stored in the
  artefact and passed in by `ExportedStep`, so the serialised module holds no weights;
- state: a flat dict, `ClockState` flattened (`state_names`): `cache/<stage>/<leaf>` each
  stage's latest output (with a batch axis of 1), `t` the next frame's index (int32 scalar),
  `ref` the adaptive clock's reference signal (shape [0] without one), `change` its last change
  fraction (float32 scalar), and for a budget (`adaptive@R/W`) `control/theta` its current
  threshold (float32 scalar) and `control/history` its last W firings (bool `[W]`);
- frame: float32 `[H, W, 3]`, BGR minus the data set's mean (`model.preprocess`);
- scores: float32 `[H, W, C]`; fired: bool `[N]`, which stages computed.

The artefact is one uncompressed `.npz` file (no pickles): the serialised `Exported`, its
metadata as JSON (`ExportedStep.meta`), the parameters and the initial state, each array as
raw bytes (bfloat16 included). It is written to a temporary file and renamed into place.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cwfcn import clockwork, durable

FORMAT = "cwfcn-exported-step/1"
DEFAULT_PLATFORMS = ("cpu", "cuda")  # one artefact for a laptop and a GPU


def _key_name(key: Any) -> str:
    for attr in ("name", "idx", "key"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def state_names(state: clockwork.ClockState) -> list[str]:
    """The flat names of a `ClockState`'s leaves, in its flattening order: `cache/0/1`,
    `t`, `ref`, `change` (and `control/theta`, `control/history` for a budget)."""
    return ["/".join(_key_name(k) for k in path)
            for path, _ in jax.tree_util.tree_flatten_with_path(state)[0]]


def _to_bytes(a: Any) -> tuple[np.ndarray, dict]:
    a = np.asarray(a)  # (np.ascontiguousarray would make a scalar 1-d)
    raw = np.ascontiguousarray(a.reshape(-1)).view(np.uint8)
    return raw, {"shape": list(a.shape), "dtype": a.dtype.name}


def _from_bytes(raw: np.ndarray, spec: dict) -> np.ndarray:
    return raw.view(jnp.dtype(spec["dtype"])).reshape(spec["shape"])


def _check_out(path: Path) -> None:
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a regular file: name a file (e.g. step.bin)")
    if not path.parent.is_dir():
        raise OSError(f"{path}: no directory {path.parent}; create it first")


def export_step(
    net: Any, schedule: str | clockwork.Schedule, frame_shape: Sequence[int],
    path: str | os.PathLike[str], *, dtype: Any = None,
    platforms: Sequence[str] = DEFAULT_PLATFORMS, mean_bgr: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict:
    """Serialises the jitted clockwork step of `net` under `schedule` to `path`.

    Args:
      net: a staged net (an `nnx.Module` with a `staging`, e.g. `model.FCN8s`).
      schedule: a `Schedule` or its name (`clockwork.parse_schedule`).
      frame_shape: `(H, W, 3)` of the frames the step takes.
      path: the artefact file (replaced atomically if it exists).
      dtype: the compute dtype (None or "float32", "bfloat16"), as `Clockwork`.
      platforms: the platforms it is lowered for (`jax.export`), e.g. ("cpu", "cuda").
      mean_bgr, class_names: recorded in the metadata for the deployer (optional).

    Returns:
      The metadata written (`ExportedStep.meta`).

    Raises:
      ValueError: a bad schedule, frame shape or dtype, or a path that is not a file.
    """
    frame_shape = tuple(int(d) for d in frame_shape)
    if len(frame_shape) != 3 or frame_shape[-1] != 3 or min(frame_shape) < 1:
        raise ValueError(f"frame_shape must be (H, W, 3) with H, W >= 1, got {frame_shape}")
    path = Path(path)
    _check_out(path)
    cw = clockwork.Clockwork(net, schedule, dtype=dtype)
    state = cw.init(frame_shape)
    names = state_names(state)
    params, params_tree = jax.tree.flatten(cw.params)
    state_tree = jax.tree.structure(state)

    def step(params, flat_state, frame):
        tree = jax.tree.unflatten(state_tree, [flat_state[n] for n in names])
        state, scores, fired = cw.pure_step(jax.tree.unflatten(params_tree, params), tree, frame)
        return dict(zip(names, jax.tree.leaves(state), strict=True)), scores, fired

    flat = dict(zip(names, jax.tree.leaves(state), strict=True))
    frame = jax.ShapeDtypeStruct(frame_shape, jnp.float32)
    exported = jax.export.export(jax.jit(step), platforms=tuple(platforms))(
        tuple(params), flat, frame)
    meta = {
        "format": FORMAT, "schedule": cw.schedule.name, "num_stages": cw.schedule.num_stages,
        "frame_shape": list(frame_shape), "num_classes": int(exported.out_avals[-2].shape[-1]),
        "dtype": cw.dtype.name, "platforms": list(exported.platforms),
        "state_names": names, "jax_version": jax.__version__,
        "mean_bgr": None if mean_bgr is None else [float(m) for m in mean_bgr],
        "class_names": None if class_names is None else list(class_names),
    }
    arrays, specs = {}, {"params": [], "state": {}}
    for i, leaf in enumerate(params):
        arrays[f"params/{i}"], spec = _to_bytes(leaf)
        specs["params"].append(spec)
    for name, leaf in flat.items():
        arrays[f"state/{name}"], specs["state"][name] = _to_bytes(leaf)
    meta["arrays"] = specs
    arrays["exported"] = np.frombuffer(bytes(exported.serialize()), np.uint8)
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    def write(f) -> None:
        os.fchmod(f.fileno(), 0o666 & ~_umask())  # mkstemp's 0600 would stick to the file
        np.savez(f, **arrays)

    durable.write_atomically(path, write, binary=True)
    return {k: v for k, v in meta.items() if k != "arrays"}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class ExportedStep:
    """An artefact of `export_step`, loaded: `init()` then `step(state, frame)` per frame.

    Attributes:
      meta: schedule, num_stages, frame_shape, num_classes, dtype, platforms, state_names,
        jax_version, mean_bgr, class_names.
    """

    def __init__(self, exported: jax.export.Exported, params: tuple, state: dict, meta: dict):
        self.meta = meta
        self._params = tuple(jnp.asarray(p) for p in params)
        self._state = state
        self._call = jax.jit(exported.call)

    def init(self) -> dict[str, jax.Array]:
        """The state before the first frame (`state_names`' dict of arrays)."""
        return {name: jnp.asarray(a) for name, a in self._state.items()}

    def step(self, state: dict, frame: Any) -> tuple[dict, jax.Array, jax.Array]:
        """One frame: `(state, frame float32 [H, W, 3]) -> (state, scores [H, W, C], fired [N])`.

        Raises:
          ValueError: a frame of another shape, or a state that is not this step's.
        """
        frame = jnp.asarray(frame)
        want = tuple(self.meta["frame_shape"])
        if frame.shape != want or not jnp.issubdtype(frame.dtype, jnp.floating):
            raise ValueError(f"the exported step takes float frames of shape {want}, got "
                             f"{frame.dtype} {frame.shape}: export again for another size")
        if not isinstance(state, dict) or sorted(state) != sorted(self._state):
            raise ValueError("state must be the dict from init() or the previous step()")
        return self._call(self._params, state, frame.astype(jnp.float32))


def load(path: str | os.PathLike[str]) -> ExportedStep:
    """The artefact at `path` (`export_step`), ready to run.

    Raises:
      ValueError: a file that is not an exported step, or one that is damaged.
      OSError: a missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise OSError(f"{path}: no such file (write one with python -m cwfcn.export)")
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            if meta.get("format") != FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            specs = meta.pop("arrays")
            params = [_from_bytes(z[f"params/{i}"], s) for i, s in enumerate(specs["params"])]
            state = {n: _from_bytes(z[f"state/{n}"], s) for n, s in specs["state"].items()}
            exported = jax.export.deserialize(bytearray(z["exported"].tobytes()))
    except (ValueError, KeyError, TypeError, EOFError, OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path} is not a cwfcn exported step, or it is damaged ({e}): "
                         "export it again with python -m cwfcn.export") from e
    return ExportedStep(exported, tuple(params), state, meta)


__all__ = ["DEFAULT_PLATFORMS", "FORMAT", "ExportedStep", "export_step", "load", "state_names"]
