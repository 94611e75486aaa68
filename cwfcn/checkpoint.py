"""Checkpoints: a thin wrapper over orbax's `CheckpointManager`.

A checkpoint is a step directory under `workdir` holding the net's parameters (as
a pure dict of arrays), for training the optimiser state and the training input's state
(the item "input": JSON, `training.Reader.state`), and the sha256 digest of each. Orbax
writes each step, every item together, to a temporary directory and renames it when
complete, so a crash mid-save never leaves a step that restores (the next save deletes
the leftover); the digest catches a step damaged on disk later, which orbax itself
would read back as wrong numbers. A step without its digest is refused too (unless
`UNCHECKED_ENV` is set, for steps saved before digests were), and so is one holding NaN or
inf values. A training run holds its workdir (`hold_workdir`), so two runs never write one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

_ARRAYS = ("params", "opt_state")
_INPUT = "input"  # the training input's state (JSON)
_CAUSE_CHARS = 300  # orbax's errors can hold whole TensorStore specs
# Set to 1, this loads steps that have no digest (saved before digests were), unchecked.
UNCHECKED_ENV = "CWFCN_UNCHECKED_CHECKPOINTS"
LOCK_FILE = ".lock"  # in a workdir: the pid and host of the run that holds it


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, damaged, or does not fit the net."""


class WorkdirBusyError(ValueError):
    """Another run holds the workdir (`hold_workdir`).

    Attributes:
      holder: who holds it, as its lock file says ("pid N on host H"), or a placeholder.
    """

    def __init__(self, message: str, holder: str):
        super().__init__(message)
        self.holder = holder


def _manager(
    workdir: str | os.PathLike, max_to_keep: int | None = None, *, write: bool = False
) -> ocp.CheckpointManager:
    """A reader (creates nothing) or the one writer, which also deletes the temporary
    directories that a killed save left behind (a reader must not: a save may be running)."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=write,
                                           cleanup_tmp_directories=write)
    handlers = {name: ocp.StandardCheckpointHandler() for name in _ARRAYS}
    handlers["digest"] = ocp.JsonCheckpointHandler()
    handlers[_INPUT] = ocp.JsonCheckpointHandler()
    return ocp.CheckpointManager(os.path.abspath(workdir), options=options,
                                 item_handlers=handlers)


def _drop_orbax_errors(record: logging.LogRecord) -> bool:
    """A logging filter: orbax's errors about a save that `save` already reported as a
    `CheckpointError` (its writer threads log them, with tracebacks, after it raised)."""
    return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Holds back what is written to stderr (fd 2) meanwhile, and writes it out only on
    success: on a failed write, orbax's threads print tracebacks there (by logging, and from
    TensorStore callbacks), and the CheckpointError raised instead carries the cause."""
    sys.stderr.flush()
    real = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        ok = False
        try:
            yield
            ok = True
        finally:
            if not ok:  # orbax's threads of a failed save log on after it raised
                logging.getLogger("absl").addFilter(_drop_orbax_errors)
            with contextlib.suppress(OSError):  # the held file may sit on the full disk too
                sys.stderr.flush()
            os.dup2(real, 2)
            os.close(real)
            if ok:
                held.seek(0)
                os.write(2, held.read())


@jax.jit
def _all_finite(leaves: list[jax.Array]) -> jax.Array:
    # x * 0 is NaN where x is NaN or inf and 0 elsewhere, and sums propagate NaN (a max may
    # not): compiles in a third of the time of isfinite().all() and runs faster (0.45 s and
    # 0.09 s for the VGG16 FCN-8s's 540 MB on the 2-core CPU).
    return jnp.isfinite(jnp.stack([jnp.sum(x * 0) for x in leaves])).all()


def non_finite(tree: Any) -> list[str]:
    """The leaves of `tree` that hold NaN or inf, by dotted path ("fc6.kernel"); [] if none.

    One jitted reduction over every leaf decides, so a good tree costs one device round trip;
    the leaves are looked at one by one only when it fails, to name them.
    """
    flat = [(path, x) for path, x in jax.tree_util.tree_flatten_with_path(tree)[0] if x.size]
    if not flat or bool(_all_finite([x for _, x in flat])):
        return []
    return [jax.tree_util.keystr(path, simple=True, separator=".")
            for path, x in flat if not bool(jnp.isfinite(x).all())]


def tree_digest(tree) -> str:
    """sha256 over every leaf's path, dtype, shape and bytes."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        leaf = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}:{leaf.dtype}:{leaf.shape};".encode())
        h.update(np.ascontiguousarray(leaf).tobytes())
    return h.hexdigest()


def _json_digest(value) -> str:
    """sha256 of a JSON value, written canonically (sorted keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _damaged_fix(workdir: str | os.PathLike, step: int) -> str:
    """What to do about a damaged step, for its errors."""
    return (f"delete its directory {os.path.join(os.fspath(workdir), str(step))!r} to use the "
            "step before, or train again")


def _cause(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:_CAUSE_CHARS]}{'...' if len(text) > _CAUSE_CHARS else ''}"


def save(
    workdir: str | os.PathLike,
    step: int,
    params: nnx.State,
    opt_state: Any = None,
    *,
    input_state: dict | None = None,
    max_to_keep: int | None = 3,
) -> None:
    """Saves step `step` and waits until it is complete on disk.

    Args:
      workdir: the checkpoint directory (created if missing).
      step: the training step.
      params: the net's state (`nnx.split(net)[1]`).
      opt_state: the optimiser state, or None.
      input_state: the training input's state once `step` steps are done (a JSON dict,
        `training.Reader.state`), or None.
      max_to_keep: older steps beyond this many are deleted.
    """
    trees = {"params": nnx.to_pure_dict(params)}
    if opt_state is not None:
        trees["opt_state"] = opt_state
    items = {name: ocp.args.StandardSave(tree) for name, tree in trees.items()}
    digests = {name: tree_digest(t) for name, t in trees.items()}
    if input_state is not None:
        items[_INPUT] = ocp.args.JsonSave(input_state)
        digests[_INPUT] = _json_digest(input_state)
    items["digest"] = ocp.args.JsonSave(digests)
    try:
        with _quiet(), _manager(workdir, max_to_keep, write=True) as mngr:
            mngr.save(step, args=ocp.args.Composite(**items))
            mngr.wait_until_finished()
    except Exception as e:  # orbax and TensorStore raise many types for one failed write
        raise CheckpointError(
            f"cannot write checkpoint step {step} to {os.fspath(workdir)!r} ({_cause(e)}); "
            "is the disk full or the directory read-only? Free space or pass a writable "
            "--workdir; the earlier steps there are intact") from e


def check_writable(workdir: str | os.PathLike) -> None:
    """Creates `workdir` if needed and raises CheckpointError unless a file can be written there."""
    probe = os.path.join(os.fspath(workdir), f".write-test-{os.getpid()}")
    try:
        os.makedirs(workdir, exist_ok=True)
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise CheckpointError(f"cannot write to the workdir {os.fspath(workdir)!r} ({_cause(e)}): "
                              "pass a writable --workdir, or free disk space") from e


def _lock_fd(path: str) -> int:
    """An fd of the lock file `path`, exclusively locked; raises WorkdirBusyError, naming
    the holder, if another process has it. The file that the lock is taken on must still be
    the one at `path`: a run that ends deletes it, and one that locked the deleted file would
    not exclude the next."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = (os.pread(fd, 256, 0).decode(errors="replace").strip()
                      or "a process that is just starting")
            os.close(fd)
            raise WorkdirBusyError(
                f"the workdir {os.path.dirname(path)!r} is in use by another training run "
                f"({holder}): wait for it to end, stop it, or pass another --workdir",
                holder) from None
        with contextlib.suppress(FileNotFoundError):
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        os.close(fd)


@contextlib.contextmanager
def hold_workdir(workdir: str | os.PathLike) -> Iterator[None]:
    """Holds `workdir` for one training run: an exclusive `flock` on its `LOCK_FILE`, which
    names this process (pid and host) to a run that finds it taken. The OS drops the lock
    when the process ends, however it ends, so a killed run leaves no stale lock; one that
    ends normally deletes the file too. `workdir` must exist (`check_writable`).

    Raises:
      WorkdirBusyError: another process holds `workdir`; the message names it.
    """
    path = os.path.join(os.fspath(workdir), LOCK_FILE)
    fd = _lock_fd(path)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on host {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still locked: a run waiting on it then retries afresh
        os.close(fd)


def wait_for_workdir(workdir: str | os.PathLike) -> None:
    """Blocks until no run holds `workdir` (`hold_workdir`); returns at once if none does. A
    run that was killed holds nothing: the OS dropped its lock."""
    path = os.path.join(os.fspath(workdir), LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return  # no run, or the last one ended and removed it
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # granted once the holder's exclusive lock is gone
    finally:
        os.close(fd)


def latest_step(workdir: str | os.PathLike) -> int | None:
    """The newest complete step in `workdir`, or None if there is none."""
    if not os.path.isdir(workdir):
        return None
    with _manager(workdir) as mngr:
        return mngr.latest_step()


def _paths(tree) -> dict[str, tuple]:
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): tuple(leaf.shape) for path, leaf in flat}


def _check_fits(where: str, saved, template) -> None:
    """Compares parameter shapes before reading, so a wrong net fails with the layer named."""
    saved, wanted = _paths(saved), _paths(template)
    for name in sorted(wanted.keys() | saved.keys()):
        if saved.get(name) != wanted.get(name):
            raise CheckpointError(
                f"{where} does not fit this net: {name} is {saved.get(name, 'missing')} there "
                f"but {wanted.get(name, 'absent')} here (another architecture or number of "
                "classes?)")


def restore(
    workdir: str | os.PathLike,
    params: nnx.State,
    opt_state: Any = None,
    *,
    step: int | None = None,
) -> tuple[int, nnx.State, Any]:
    """Restores a step into the shapes of the given templates.

    Args:
      workdir: the checkpoint directory.
      params: a state of the same net (its arrays give shapes and dtypes).
      opt_state: an optimiser state template, or None to skip it.
      step: the step to restore; None for the latest.

    Returns:
      (step, params, opt_state) with the restored arrays.

    Raises:
      CheckpointError: no checkpoint there, one that does not fit the net, or a damaged one.
    """
    step = latest_step(workdir) if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint in {os.fspath(workdir)!r}: train first "
                              "(python train.py --workdir DIR) or pass the right directory")
    template = nnx.to_pure_dict(params)
    where = f"checkpoint step {step} in {os.fspath(workdir)!r}"
    damaged = _damaged_fix(workdir, step)
    with _manager(workdir) as mngr:
        try:
            _check_fits(where, mngr.item_metadata(step)["params"], template)
            restored = _restore_item(mngr, step, "params", template)
            digests = _saved_digests(mngr, step)
        except CheckpointError:
            raise
        except Exception as e:  # orbax and TensorStore raise many types for one bad file
            raise CheckpointError(f"{where} cannot be read, it is damaged or incomplete "
                                  f"({_cause(e)}): {damaged}") from e
        if opt_state is not None and "opt_state" not in (mngr.item_metadata(step) or {}):
            raise CheckpointError(f"{where} holds the net alone, no optimizer state (saved "
                                  "with config.train.save_final_optimizer False): training "
                                  "cannot go on from it; train into a new --workdir")
        if opt_state is not None:
            try:
                opt_state = _restore_item(mngr, step, "opt_state", opt_state)
            except Exception as e:
                raise CheckpointError(
                    f"{where}: its optimizer state does not fit (another optimizer in the "
                    f"config? train into a new --workdir): {_cause(e)}") from e
    checked = {"params": restored, **({} if opt_state is None else {"opt_state": opt_state})}
    for name, tree in checked.items():
        _check_digest(where, damaged, name, digests.get(name), lambda tree=tree: tree_digest(tree))
    bad = non_finite(checked)
    if bad:
        raise CheckpointError(f"{where} holds NaN or inf values in {', '.join(bad)}: the run "
                              f"that saved it diverged; {damaged} (with a lower "
                              "config.optim.learning_rate)")
    params = jax.tree.map(lambda x: x, params)  # a copy: the template stays untouched
    nnx.replace_by_pure_dict(params, restored)
    return step, params, opt_state


def _abstract(template):
    """The template's shapes and dtypes, each with the template array's sharding (a host
    array's: this process's first device). Orbax places the restored arrays there, so a
    step saved under another device layout (several devices or hosts) restores here; with
    no sharding it would rebuild the saved layout and fail on a topology mismatch."""
    local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def leaf(shaped, x):
        sharding = x.sharding if isinstance(x, jax.Array) else local
        return jax.ShapeDtypeStruct(shaped.shape, shaped.dtype, sharding=sharding)

    return jax.tree.map(leaf, jax.eval_shape(lambda: template), template)


def _restore_item(mngr: ocp.CheckpointManager, step: int, name: str, template):
    args = ocp.args.Composite(**{name: ocp.args.StandardRestore(_abstract(template))})
    return mngr.restore(step, args=args)[name]


def _check_digest(where: str, damaged: str, name: str, saved: str | None,
                  digest: Callable[[], str]) -> None:
    """Raises CheckpointError unless item `name` of a step matches its `saved` digest
    (`digest()` computes the item's). A step without one is refused too, damage to it would go
    unseen, unless `UNCHECKED_ENV` is set: then it loads, with a line on stderr saying so."""
    if saved is None:
        if os.environ.get(UNCHECKED_ENV) == "1":
            print(f"{where} has no digest of its {name}: loaded unchecked, as {UNCHECKED_ENV}=1 "
                  "asks", file=sys.stderr)
            return
        raise CheckpointError(
            f"{where} has no digest of its {name}, so damage to it cannot be detected (the "
            f"digest was deleted, or an older cwfcn saved the step): {damaged}; or, to load "
            f"it unchecked, set {UNCHECKED_ENV}=1")
    if digest() != saved:
        raise CheckpointError(f"{where} is damaged: the sha256 of its {name} does not match "
                              f"the digest saved with it: {damaged}")


def _saved_digests(mngr: ocp.CheckpointManager, step: int) -> dict[str, str]:
    """The digests saved with `step`; {} for a checkpoint saved without (older, or damaged)."""
    if "digest" not in (mngr.item_metadata(step) or {}):
        return {}
    return dict(mngr.restore(step, args=ocp.args.Composite(digest=ocp.args.JsonRestore()))
                ["digest"])


def restore_input(workdir: str | os.PathLike, step: int) -> dict | None:
    """The training input's state saved with checkpoint `step` (`save(..., input_state=)`).

    Returns:
      The JSON dict as saved, or None for a step saved without one (before checkpoints held
      the input's state, or by `save` without `input_state`).

    Raises:
      CheckpointError: the state cannot be read, or does not match its saved digest.
    """
    where = f"checkpoint step {step} in {os.fspath(workdir)!r}"
    damaged = _damaged_fix(workdir, step)
    with _manager(workdir) as mngr:
        try:
            if _INPUT not in (mngr.item_metadata(step) or {}):
                return None
            state = mngr.restore(step, args=ocp.args.Composite(
                **{_INPUT: ocp.args.JsonRestore()}))[_INPUT]
            digest = _saved_digests(mngr, step).get(_INPUT)
        except Exception as e:  # orbax raises many types for one bad file
            raise CheckpointError(f"{where}: its input state cannot be read, it is damaged "
                                  f"({_cause(e)}): {damaged}") from e
    _check_digest(where, damaged, "input state", digest, lambda: _json_digest(state))
    return state


def load_params(workdir: str | os.PathLike, net: nnx.Module, step: int | None = None) -> int:
    """Loads a checkpoint's parameters into `net` in place; returns the step."""
    step, params, _ = restore(workdir, nnx.state(net), step=step)
    nnx.update(net, params)
    return step
