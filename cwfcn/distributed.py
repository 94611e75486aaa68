"""Many devices and many hosts, on JAX's own machinery (`jax.sharding`, `jax.distributed`).

- `initialize` wires `jax.distributed.initialize` from arguments, absl flags
  (`define_flags`) or the environment (`JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`,
  `JAX_PROCESS_ID`); on CPU it selects the gloo collectives so that hosts can reduce.
- `make_mesh` is a one-axis `Mesh` ("data") over every device of every process;
  `replicate` and `shard_batch` place pytrees on it with `NamedSharding`. A global
  batch is split by rows: each process contributes only its own rows (`host_rows`).
- Data-parallel training is `train_lib.train_step` on replicated params and a
  batch sharded over "data": jit partitions it and all-reduces the gradients.
- `evaluate_sharded` runs the batched clockwork engine (`batched.run_batch`) on each
  device's share of the streams under `jax.shard_map`, so every device keeps its own
  adaptive saving, and sums the confusion matrices and fired counts across devices.
- `StagePipeline` runs a pipelined schedule with each stage on its own device.
"""

from __future__ import annotations

import functools
import os
import socket
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint  # noqa: F401  (defines the barrier flag that `initialize` sets)
from absl import flags
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from cwfcn import batched, clockwork, metrics

DATA_AXIS = "data"
_ORBAX_BARRIER_FLAG = "experimental_orbax_use_distributed_barrier"  # defined by orbax
ENV_NUM_PROCESSES, ENV_PROCESS_ID = "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"


def define_flags() -> None:
    """Defines --coordinator, --num_processes and --process_id (absl) for a CLI."""
    flags.DEFINE_string("coordinator", None,
                        "host:port of process 0, for multi-host runs (or JAX_COORDINATOR_ADDRESS)")
    flags.DEFINE_integer("num_processes", None,
                         f"processes of a multi-host run (or {ENV_NUM_PROCESSES})")
    flags.DEFINE_integer("process_id", None,
                         f"this process's index in [0, num_processes) (or {ENV_PROCESS_ID})")


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    env: dict[str, str] | None = None,
) -> bool:
    """Joins a multi-process run with `jax.distributed.initialize`, if one is asked for.

    Must run before anything touches a device. Arguments left None come from `env`
    (default `os.environ`). With no coordinator anywhere, nothing happens (one process).

    Args:
      coordinator: "host:port" where process 0 serves the run's coordination service.
      num_processes: the number of processes.
      process_id: this process's index in [0, num_processes).
      env: the environment to read the fallbacks from.

    Returns:
      True if `jax.distributed` was initialised, False for a single-process run.

    Raises:
      ValueError: a coordinator that is not HOST:PORT of a host that resolves, one without
        a valid process count and id, or a process count or id without a coordinator.
    """
    env = os.environ if env is None else env
    coordinator = coordinator or env.get("JAX_COORDINATOR_ADDRESS")
    if not coordinator:
        if num_processes is not None or process_id is not None:  # else silently one process
            raise ValueError("--process_id and --num_processes are for a multi-host run: give "
                             "--coordinator HOST:PORT too (process 0's address), or drop them")
        return False
    check_coordinator(coordinator)
    try:
        num_processes = int(env[ENV_NUM_PROCESSES]) if num_processes is None else num_processes
        process_id = int(env[ENV_PROCESS_ID]) if process_id is None else process_id
    except (KeyError, ValueError) as e:
        raise ValueError(f"a multi-host run (coordinator {coordinator!r}) needs --num_processes "
                         f"and --process_id (or {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}): {e}") from e
    if num_processes < 1 or not 0 <= process_id < num_processes:
        raise ValueError(f"need num_processes >= 1 and 0 <= process_id < num_processes, got "
                         f"{num_processes} and {process_id}")
    # CPU devices of different processes reduce over gloo (the default may be none).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator, num_processes, process_id)
    # Orbax syncs hosts with a device collective by default, whose gloo context must form
    # within 30 s of the first host's arrival; the coordination service's barrier waits
    # orbax's own timeout (minutes), so a slow host does not fail the save.
    flags.FLAGS[_ORBAX_BARRIER_FLAG].value = True
    return True


def check_coordinator(address: str) -> None:
    """Raises ValueError unless `address` is HOST:PORT with a port in [1, 65535] and a host
    that resolves: jax.distributed takes anything, and crashes (a segmentation fault) on
    what it cannot parse."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")  # [::1]:1234
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad --coordinator {address!r}: give HOST:PORT of process 0, a port "
                         "in [1, 65535], e.g. host0:1234")
    try:
        socket.getaddrinfo(host, int(port))
    except (OSError, UnicodeError) as e:
        raise ValueError(f"bad --coordinator {address!r}: cannot resolve the host {host!r} "
                         f"({e}): check the name, or give its IP address") from e


def initialize_from_flags() -> bool:
    """`initialize` from the flags of `define_flags` (the environment fills the gaps)."""
    flag_values = flags.FLAGS
    return initialize(flag_values.coordinator, flag_values.num_processes,
                      flag_values.process_id)


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A one-axis mesh ("data") over the first `num_devices` devices of all processes.

    Auto axes: jit propagates the shardings of its inputs (GSPMD), so library code
    written for one device runs unchanged on the mesh.
    """
    count = jax.device_count() if num_devices is None else num_devices
    if not 1 <= count <= jax.device_count():
        raise ValueError(f"num_devices must be in [1, {jax.device_count()}], got {count}")
    return jax.make_mesh((count,), (DATA_AXIS,), axis_types=(AxisType.Auto,),
                         devices=jax.devices()[:count])


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Places every leaf of `tree` whole on every device of `mesh` (params, optimiser state)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def host_rows(global_rows: int, mesh: Mesh) -> slice:
    """The rows of a global batch of `global_rows` that this process holds.

    Rows are split evenly over the mesh's devices and a process holds those of its own
    devices (contiguous, as `make_mesh` orders devices by process).

    Raises:
      ValueError: if the rows do not split evenly over the devices.
    """
    devices = mesh.devices.size
    if global_rows % devices:
        raise ValueError(f"a batch of {global_rows} does not split over {devices} devices: "
                         f"use a multiple of {devices}")
    rows_per_device = global_rows // devices
    own = [index for index, device in enumerate(mesh.devices.flat)
           if device.process_index == jax.process_index()]  # this process's devices
    if own != list(range(own[0], own[-1] + 1)):
        raise ValueError("this process's devices are not contiguous in the mesh")
    return slice(own[0] * rows_per_device, (own[-1] + 1) * rows_per_device)


def shard_batch(mesh: Mesh, tree: Any) -> Any:
    """A global batch as arrays sharded by rows over "data".

    Args:
      mesh: from `make_mesh`.
      tree: a pytree of host arrays `[N, ...]` with the same N: the whole global batch
        (every process passes the same batch; each contributes only `host_rows`).

    Returns:
      The same tree of global `jax.Array`s `[N, ...]`, rows sharded over "data".
    """
    sharding = NamedSharding(mesh, P(DATA_AXIS))

    def put(leaf):
        leaf = np.asarray(leaf)
        rows = host_rows(leaf.shape[0], mesh)
        return jax.make_array_from_process_local_data(sharding, leaf[rows], leaf.shape)

    return jax.tree.map(put, tree)


class ShardedEval(NamedTuple):
    """What `evaluate_sharded` returns, reduced over every device.

    Attributes:
      hist: int64 `[C, C]`, the confusion of the scored frames (rows = truth).
      fired: float `[N]`, the fraction of stream-frames on which each stage fired.
    """

    hist: np.ndarray
    fired: np.ndarray


@functools.partial(jax.jit, static_argnames=(*clockwork.STATIC_ARGNAMES, "capacities", "mesh",
                                             "scored", "num_classes"))
def _evaluate(params, videos, labels, *, graphdef, staging, schedule, capacities, mesh, scored,
              num_classes):
    def local(params, videos, labels):  # one device's streams
        out = batched.scan_batch(params, videos, graphdef=graphdef, staging=staging,
                                 schedule=schedule, capacities=capacities)
        preds = jnp.argmax(out.scores[:, slice(*scored)], -1)
        hist = metrics.confusion(labels[:, slice(*scored)], preds, num_classes)
        fired = jnp.sum(out.fired.astype(jnp.int32), axis=(0, 1))
        return jax.lax.psum(hist, DATA_AXIS), jax.lax.psum(fired, DATA_AXIS)

    # Scan carries start unvarying and become device-varying: skip the vma type check.
    return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(DATA_AXIS), P(DATA_AXIS)),
                         out_specs=(P(), P()), check_vma=False)(params, videos, labels)


def evaluate_sharded(
    net: nnx.Module,
    videos: np.ndarray,
    labels: np.ndarray,
    schedule: str | clockwork.Schedule,
    mesh: Mesh,
    *,
    scored: slice = slice(None),
    capacities: tuple[int, ...] | None = None,
) -> ShardedEval:
    """Scores a schedule on B streams split over the devices of `mesh`.

    Each device runs `batched.run_batch` on its B / D streams (so the adaptive gate
    saves per device), and the confusion matrices and fired counts are summed across
    devices (`psum`), then on the host in int64.

    Args:
      net: a staged net with `num_classes` (e.g. `model.FCN8s`).
      videos: float32 `[B, T, H, W, 3]`, preprocessed; the global batch (each process
        passes all of it and contributes its `host_rows`). B must split over the devices.
      labels: int `[B, T, H, W]`, 255 = ignore.
      schedule: a schedule or its name.
      mesh: from `make_mesh`.
      scored: the frames of each video that are scored (all are run).
      capacities: the adaptive gate's slot sizes per device (`batched.check_capacities`).

    Returns:
      `ShardedEval(hist int64 [C, C], fired float [N])`.
    """
    prepared = clockwork.prepare(net, schedule)
    if np.ndim(videos) != 5 or np.shape(labels) != np.shape(videos)[:4]:
        raise ValueError(f"videos must be [B, T, H, W, 3] and labels [B, T, H, W], got shapes "
                         f"{np.shape(videos)} and {np.shape(labels)}")
    videos, labels = shard_batch(mesh, (np.asarray(videos, np.float32),
                                        np.asarray(labels, np.int32)))
    streams_per_device = videos.shape[0] // mesh.devices.size
    adaptive = prepared.schedule.theta is not None
    caps = batched.check_capacities(capacities, streams_per_device) if adaptive else ()
    hist, fired = _evaluate(replicate(mesh, prepared.params), videos, labels, capacities=caps,
                            mesh=mesh, scored=(scored.start, scored.stop, scored.step),
                            num_classes=net.num_classes, **prepared.static)
    frames = videos.shape[0] * videos.shape[1]
    return ShardedEval(np.asarray(hist, np.int64), np.asarray(fired) / frames)


class PipelineState(NamedTuple):
    """`StagePipeline.step`'s carry: the next frame's index and each stage's last output
    (on that stage's device)."""

    t: int
    outs: tuple


class StagePipeline:
    """A pipelined schedule with each stage on its own device: the stages of a step run
    at the same time, one per device.

    Under `pipeline2`/`pipeline3` a lagged stage reads the previous step's output of the
    stage before it, so the stages of one step do not wait for each other. Here stage k
    is a jitted function placed on `devices[k]` (its params live there); a step dispatches
    every stage without waiting (JAX dispatches asynchronously), so the devices work side
    by side, and the fusion runs on the first device. Same results as
    `clockwork.run(net, frames, schedule)`.

    Example:
      pipe = StagePipeline(net, "pipeline3", jax.devices()[:3])
      out = pipe.run(frames)
    """

    def __init__(self, net: nnx.Module, schedule: str | clockwork.Schedule,
                 devices: list[jax.Device] | None = None):
        prepared = clockwork.prepare(net, schedule)
        self.schedule, self.staging = prepared.schedule, prepared.staging
        if not self.schedule.pipelined:
            raise ValueError(f"schedule {self.schedule.name!r} is not pipelined: use "
                             "pipeline2 or pipeline3 (clockwork.run runs the others)")
        devices = list(devices or jax.devices())
        self.devices = [devices[k % len(devices)] for k in range(len(self.staging.stages))]
        graphdef = prepared.graphdef
        self._params = [jax.device_put(prepared.params, device) for device in self.devices]
        self._stages = [jax.jit(lambda params, x, stage=stage: stage(nnx.merge(graphdef, params),
                                                                     x))
                        for stage in self.staging.stages]
        self._fuse = jax.jit(lambda params, outs, out_hw: self.staging.fuse(
            nnx.merge(graphdef, params), outs, out_hw)[0], static_argnums=2)

    def step(self, state: PipelineState | None, frame: jax.Array
             ) -> tuple[PipelineState, jax.Array]:
        """One frame `[H, W, 3]`: `(state, frame) -> (state, scores [H, W, C])`; start with
        state None. The pipeline fills as `clockwork.run`'s (`clockwork.fill_lags`): frame 0
        runs the stages one after another, and each later step lags one more stage."""
        t = 0 if state is None else state.t
        lags = clockwork.fill_lags(self.schedule, t)
        x = jax.device_put(jnp.asarray(frame)[None], self.devices[0])
        outs: list = []
        for k, stage in enumerate(self._stages):
            src = x if k == 0 else (state.outs[k - 1] if lags[k] else outs[k - 1])
            outs.append(stage(self._params[k], jax.device_put(src, self.devices[k])))
        on_first = jax.device_put(tuple(outs), self.devices[0])
        scores = self._fuse(self._params[0], on_first, tuple(frame.shape[:2]))
        return PipelineState(t + 1, tuple(outs)), scores

    def run(self, frames: jax.Array | np.ndarray) -> clockwork.RunOutput:
        """A video `[T, H, W, 3]` (preprocessed): `RunOutput` as `clockwork.run` gives it."""
        clockwork.check_frames(frames, 4, "frames")
        state, scores = None, []
        for frame in frames:
            state, frame_scores = self.step(state, frame)
            scores.append(frame_scores)
        num_frames, num_stages = len(frames), len(self._stages)
        return clockwork.RunOutput(jnp.stack(jax.device_put(scores, self.devices[0])),
                                   jnp.ones((num_frames, num_stages), bool),
                                   jnp.zeros((num_frames,), jnp.float32))
