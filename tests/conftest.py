"""Shared fixtures: one narrow FCN-8s for the whole session (test_model and test_clockwork),
and a batch of CLI runs in one real process (test_cli, test_fuzz); one compilation cache for
the CLIs that the tests start.

The net is shared so that each (shape, schedule) is traced and compiled once. Tests must
not mutate `net`: use `nnx.clone(net)` before changing parameters or train/eval mode.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from flax import nnx

from cwfcn import compilation, model

ROOT = Path(__file__).resolve().parents[1]

NUM_CLASSES = 5


def pytest_configure(config: pytest.Config) -> None:
    """The CLIs that tests start (each with a cache of its own) share one persistent
    compilation cache for the run, as a user's runs share theirs: the tiny config's programs
    compile once, not once a test (a seventh of test_cli's time). Set here, in the process
    that starts pytest-xdist's workers, so that they inherit it; a user's setting stays."""
    if hasattr(config, "workerinput") or compilation.CACHE_ENV in os.environ:
        return
    folder = tempfile.mkdtemp(prefix="cwfcn-tests-xla-")
    os.environ[compilation.CACHE_ENV] = folder
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))


@pytest.fixture(scope="session")
def net() -> model.FCN8s:
    """Narrow FCN-8s, 5 classes, random (non-zero) score layers."""
    return model.narrow_fcn8s(num_classes=NUM_CLASSES, rngs=nnx.Rngs(0))



# Runs each argv of a JSON list on stdin as `cli.main` runs it, in a child forked from one
# process that imported cwfcn (one JAX import for the batch): with CLI_STOP=1 the work a run
# would start replaced by "REACHED" and exit 0; its memory capped, killed past CLI_BOUND_S s.
CLI_DRIVER = r"""
import importlib.util, json, os, resource, select, signal, sys, time, traceback
sys.path.insert(0, os.getcwd())
from cwfcn import cli, evaluate_lib, train_lib
from cwfcn import distributed
prog, cases = sys.argv[1], json.loads(sys.stdin.read())
def reached(*args, **kwargs):
    print("REACHED", flush=True)
    os._exit(0)
for module, name in ((train_lib, "_train"), (evaluate_lib, "load_net"),
                     (evaluate_lib, "evaluate_live"), (distributed.jax.distributed, "initialize")):
    if os.environ["CLI_STOP"] == "1":
        setattr(module, name, reached)
out = []
for argv in cases:
    rout, wout = os.pipe()
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(rout)
        os.dup2(wout, 1)
        os.dup2(wout, 2)
        with open("/proc/self/status") as f:  # a read without end fails, not the machine
            size = next(int(l.split()[1]) for l in f if l.startswith("VmSize:")) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + 2**31, resource.RLIM_INFINITY))
        code = 1
        try:  # the CLI imported now, as it runs: its --config reads sys.argv then
            sys.argv = argv
            spec = importlib.util.spec_from_file_location("_fuzzed", prog)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            cli.main(prog, getattr(module, prog.removesuffix(".py")))
            code = 0
        except SystemExit as e:  # as the interpreter exits on it
            code = e.code if isinstance(e.code, int) else (e.code is not None)
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(wout)
    data, deadline = b"", started + float(os.environ["CLI_BOUND_S"])
    while True:
        ready, _, _ = select.select([rout], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            break
        chunk = os.read(rout, 65536)
        if not chunk:
            break
        data += chunk
    os.close(rout)
    _, status = os.waitpid(pid, 0)
    out.append({"argv": argv, "status": os.waitstatus_to_exitcode(status),
                "output": data.decode(errors="replace"), "s": time.monotonic() - started})
print("RESULTS " + json.dumps(out))
"""


@pytest.fixture(scope="session")
def run_cli_batch():
    """`run(prog, argvs, cache, bound_s, stop) -> [{argv, status, output (stdout and
    stderr), s}]`: `CLI_DRIVER`, with `cache` as CWFCN_CACHE; `stop=False` lets each run do
    its work (loading the net, training) until it ends or fails."""

    def run(prog: str, argvs: list[list[str]], cache: Path, bound_s: float = 20.0,
            stop: bool = True) -> list:
        env = dict(os.environ, CWFCN_CACHE=str(cache), CLI_BOUND_S=str(bound_s),
                   CLI_STOP=str(int(stop)))
        proc = subprocess.run([sys.executable, "-c", CLI_DRIVER, prog], input=json.dumps(argvs),
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results = json.loads(proc.stdout.rpartition("RESULTS ")[2])
        assert [r["argv"] for r in results] == argvs
        return results

    return run
