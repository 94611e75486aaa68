"""Checkpoints: a thin wrapper over orbax's `CheckpointManager`.

A checkpoint is a step directory under `workdir` holding the net's parameters (as
a pure dict of arrays) and, for training, the optimiser state. Orbax writes each
step to a temporary directory and renames it when complete, so a crash mid-save
never leaves a step that restores.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from flax import nnx


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or does not fit the net."""


def _manager(workdir: str | os.PathLike, max_to_keep: int | None = None) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    handlers = {name: ocp.StandardCheckpointHandler() for name in ("params", "opt_state")}
    return ocp.CheckpointManager(os.path.abspath(workdir), options=options,
                                 item_handlers=handlers)


def save(
    workdir: str | os.PathLike,
    step: int,
    params: nnx.State,
    opt_state: Any = None,
    *,
    max_to_keep: int | None = 3,
) -> None:
    """Saves step `step` and waits until it is complete on disk.

    Args:
      workdir: the checkpoint directory (created if missing).
      step: the training step.
      params: the net's state (`nnx.split(net)[1]`).
      opt_state: the optimiser state, or None.
      max_to_keep: older steps beyond this many are deleted.
    """
    items = {"params": ocp.args.StandardSave(nnx.to_pure_dict(params))}
    if opt_state is not None:
        items["opt_state"] = ocp.args.StandardSave(opt_state)
    with _manager(workdir, max_to_keep) as mngr:
        mngr.save(step, args=ocp.args.Composite(**items))
        mngr.wait_until_finished()


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
      CheckpointError: no checkpoint there, or one that does not fit the net.
    """
    step = latest_step(workdir) if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint in {os.fspath(workdir)!r}: train first "
                              "(python train.py --workdir DIR) or pass the right directory")
    template = nnx.to_pure_dict(params)
    where = f"checkpoint step {step} in {os.fspath(workdir)!r}"
    with _manager(workdir) as mngr:
        try:
            _check_fits(where, mngr.item_metadata(step)["params"], template)
            abstract = jax.eval_shape(lambda: template)
            restored = mngr.restore(step, args=ocp.args.Composite(
                params=ocp.args.StandardRestore(abstract)))["params"]
        except (ValueError, KeyError, FileNotFoundError) as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{where} cannot be read (damaged or incomplete?): {e}") from e
        if opt_state is not None:
            try:
                opt_state = mngr.restore(step, args=ocp.args.Composite(
                    opt_state=ocp.args.StandardRestore(jax.eval_shape(lambda: opt_state))
                ))["opt_state"]
            except (ValueError, KeyError, FileNotFoundError) as e:
                raise CheckpointError(
                    f"{where}: its optimizer state does not fit (another optimizer in the "
                    f"config? train into a new --workdir): {e}") from e
    params = jax.tree.map(lambda x: x, params)  # a copy: the template stays untouched
    nnx.replace_by_pure_dict(params, restored)
    return step, params, opt_state


def load_params(workdir: str | os.PathLike, net: nnx.Module, step: int | None = None) -> int:
    """Loads a checkpoint's parameters into `net` in place; returns the step."""
    step, params, _ = restore(workdir, nnx.state(net), step=step)
    nnx.update(net, params)
    return step
