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
- `watch_peers` keeps a multi-host run from waiting on a dead process: every process
  beats through the coordination service's key-value store and one that stops beating
  for `PEER_TIMEOUT_S` is reported (the program ends, naming it); `all_arrived` is the
  bounded wait before a collective (`evaluation._gather`), so none enters it with a dead
  peer.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
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
# A process of a multi-host run that sends no heartbeat for this long is lost (killed, its
# host down): `watch_peers` ends every other within it (plus one beat). ENV_PEER_TIMEOUT
# overrides it (the tests' shorter wait).
PEER_TIMEOUT_S = 30.0
ENV_PEER_TIMEOUT = "CWFCN_PEER_TIMEOUT_S"
HEARTBEAT_PERIOD_S = 1.0  # how often each process beats and looks at the others' beats
# JAX's own detection of a dead process, which aborts the others with a multi-page log:
# later than ours, so that ours reports first.
JAX_HEARTBEAT_TIMEOUT_S = 100
_KEYS = "cwfcn/"  # this module's keys in the coordination service


class PeerLost(ConnectionError):
    """A process of a multi-host run stopped answering (killed, or its host lost), or stopped
    on an error of its own."""


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
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               heartbeat_timeout_seconds=JAX_HEARTBEAT_TIMEOUT_S)
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


def _coordination() -> tuple[Any, int, int] | None:
    """`jax.distributed`'s client of the coordination service, this process's index and the
    process count; None in a one-process run.

    Its key-value store has no public API in jax 0.10.2 (`multihost_utils` offers only
    device collectives, which wait without bound for a dead process), so this is the one
    use of `jax._src`. (It does not start the backend, as `jax.process_count()` does.)
    """
    from jax._src import distributed as jax_distributed

    state = jax_distributed.global_state
    if state.client is None or state.num_processes == 1:
        return None
    return state.client, state.process_id, state.num_processes


def peer_timeout(env: dict[str, str] | None = None) -> float:
    """`PEER_TIMEOUT_S`, or the seconds of `ENV_PEER_TIMEOUT` in `env` (default os.environ).

    Raises:
      ValueError: an `ENV_PEER_TIMEOUT` that is not a positive number.
    """
    value = (os.environ if env is None else env).get(ENV_PEER_TIMEOUT)
    if value is None:
        return PEER_TIMEOUT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(f"{ENV_PEER_TIMEOUT}={value!r}: give a positive number of seconds")
    return seconds


class _Watch:
    """`watch_peers`' state: this process's beats, the others' last beats, the gathers."""

    def __init__(self, client, process: int, processes: int, timeout: float):
        self.client, self.process, self.processes, self.timeout = (client, process, processes,
                                                                   timeout)
        self.barriers = 0  # `all_arrived` calls so far: the same count on every process
        self.stop = threading.Event()

    def beat(self, on_lost: Callable[[PeerLost], None]) -> None:
        """The heartbeat thread: beats every `HEARTBEAT_PERIOD_S` and calls `on_lost` once
        for the first process (another, or the coordinator's service) silent for `timeout`."""
        now = time.monotonic()
        last_beat = dict.fromkeys(range(self.processes), ("", now))  # process: (value, when)
        answered = now  # the coordination service's last answer
        count = 0
        while not self.stop.wait(HEARTBEAT_PERIOD_S):
            now, count = time.monotonic(), count + 1
            try:
                self.client.key_value_set(f"{_KEYS}beat/{self.process}", str(count),
                                          allow_overwrite=True)
                beats = dict(self.client.key_value_dir_get(f"{_KEYS}beat/"))
                done = {k for k, _ in self.client.key_value_dir_get(f"{_KEYS}done/")}
                failed = self.client.key_value_dir_get(f"{_KEYS}failed/")
                answered = now
            except jax.errors.JaxRuntimeError:  # a failed RPC: the service may be gone
                beats, done, failed = {}, set(), []
            if now - answered > self.timeout:
                return on_lost(self.lost(0, "the coordinator"))
            for key, error in failed:  # ended by an error of its own (or a signal)
                peer = int(key.rpartition("/")[2])
                if peer != self.process:
                    return on_lost(PeerLost(f"process {peer} of {self.processes} stopped: "
                                            f"{error}"))
            for peer, (value, when) in last_beat.items():
                if peer == self.process or f"{_KEYS}done/{peer}" in done:
                    continue
                new = beats.get(f"{_KEYS}beat/{peer}", value)
                if new != value:
                    last_beat[peer] = new, now
                elif now - when > self.timeout:
                    return on_lost(self.lost(peer))

    def lost(self, peer: int, role: str = "") -> PeerLost:
        what = f"process {peer} of {self.processes}" + (f" ({role})" if role else "")
        return PeerLost(f"{what} stopped answering (no heartbeat for {self.timeout:.0f} s): "
                        "it was killed, or its host is lost")


_watch: _Watch | None = None  # the `watch_peers` in force (one per process)


@contextlib.contextmanager
def watch_peers(on_lost: Callable[[PeerLost], None], *,
                timeout: float | None = None) -> Iterator[None]:
    """Meanwhile, a multi-host run does not wait forever on a process that died.

    A daemon thread sets this process's heartbeat in the coordination service every
    `HEARTBEAT_PERIOD_S` and reads the others'; the first process with no new heartbeat
    for `timeout` (default `peer_timeout()`: `PEER_TIMEOUT_S`, 30 s), or a coordination
    service that stops answering as long, is passed to `on_lost` as a `PeerLost` naming
    it, from that thread: `on_lost` must end the program (e.g. `cli.fail`, which exits at
    once, whatever the main thread is waiting on). A process leaving the block says so:
    then it is no longer watched, or, left by an exception, the others' `on_lost` gets
    "process i of P stopped: <its error>" at their next beat. `all_arrived` waits,
    meanwhile, for every process at a collective. Nothing happens in a one-process run.

    Limit: when process 0, which serves the coordination service, dies, JAX's own client
    in every other process aborts it at once (status 134, JAX's log on stderr): jax 0.10.2
    offers no hook to stop that (its `missed_heartbeat_callback` cannot reach Python).
    """
    global _watch
    coordination = _coordination()
    if coordination is None:
        yield
        return
    if _watch is not None:
        raise ValueError("watch_peers is already in force in this process")
    watch = _watch = _Watch(*coordination, peer_timeout() if timeout is None else timeout)
    thread = threading.Thread(target=watch.beat, args=(on_lost,), name="cwfcn-heartbeat",
                              daemon=True)
    thread.start()
    ended = ("done", "1")  # the peers stop watching this process
    try:
        yield
    except BaseException as e:  # the peers end too, at once, saying why
        ended = ("failed", " ".join(str(e).split()) or type(e).__name__)
        raise
    finally:
        watch.stop.set()
        thread.join()
        _watch = None
        with contextlib.suppress(jax.errors.JaxRuntimeError):
            watch.client.key_value_set(f"{_KEYS}{ended[0]}/{watch.process}", ended[1],
                                       allow_overwrite=True)


def all_arrived() -> None:
    """Waits until every process has called it as often as this one: before a collective,
    which would wait without bound for a process that died (or fail naming none). Bounded
    by `watch_peers`, which ends the program once a process that has not arrived is lost;
    without one in force, returns at once."""
    watch = _watch
    if watch is None:
        return
    watch.barriers += 1
    key = f"{_KEYS}arrived/{watch.barriers}/"
    watch.client.key_value_set(f"{key}{watch.process}", "1")
    for peer in range(watch.processes):
        while True:  # until the peer arrives, or the heartbeat thread ends the program
            try:
                watch.client.blocking_key_value_get(f"{key}{peer}", 60_000)
                break
            except jax.errors.JaxRuntimeError as e:
                if "DEADLINE_EXCEEDED" not in str(e):
                    raise PeerLost(f"the coordination service failed while waiting for "
                                   f"process {peer}: {e}") from e


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
