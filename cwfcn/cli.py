"""What train.py and evaluate.py share: their main, flag parsing and one-line errors.

Bad input of any kind (a flag, a config override, a data or weight file, a full disk)
ends the program with `<prog>: error: <the problem and the fix>` on one line of stderr
and exit status 2, never a traceback. Ctrl-C ends it with one line and status 130; within
`deferred_signals` (train.py's steps) SIGINT and SIGTERM wait for a safe point instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

from absl import app, flags
from absl import logging as absl_logging

from cwfcn import compilation
from cwfcn.data.samples import SampleFetchError

USAGE_ERROR = 2  # the exit status of bad input, as argparse's
# What the library raises for bad input and failed I/O: every error class of cwfcn's own is
# one of these (tests/test_reliability.py checks), so none ends in a traceback.
ERRORS = (ValueError, OSError, SampleFetchError)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # what `deferred_signals` defers


def signal_status(signum: int) -> int:
    """The exit status of a program ended by signal `signum`, as a shell reports it: 128 + n
    (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + signum


def one_line(error: object) -> str:
    """The message of `error` on one line (library messages may hold newlines)."""
    return " ".join(str(error).split())


def exit_now(line: str, status: int) -> NoReturn:
    """Prints `line` to stderr and exits with `status` at once.

    Logging stops first and the exit skips the interpreter's shutdown: library threads
    (orbax's writers) may still report the same failure, with tracebacks, meanwhile, and
    C++ threads still running at shutdown abort it ("terminate called").
    """
    logging.disable(logging.CRITICAL)
    print(line, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def fail(prog: str, error: object) -> NoReturn:
    """Prints `<prog>: error: <error>` to stderr and exits with `USAGE_ERROR` at once."""
    exit_now(f"{prog}: error: {one_line(error)}", USAGE_ERROR)


def run_or_fail(prog: str, body: Callable[[], None]) -> None:
    """Runs `body`; a `ERRORS` exception ends the program through `fail`, a Ctrl-C outside
    `deferred_signals` with one line and status 130."""
    try:
        body()
    except ERRORS as e:
        fail(prog, e)
    except KeyboardInterrupt:
        exit_now(f"{prog}: interrupted", signal_status(signal.SIGINT))


@contextlib.contextmanager
def deferred_signals(prog: str) -> Iterator[Callable[[], int | None]]:
    """SIGINT and SIGTERM, meanwhile, are only recorded: the body polls the function yielded
    (the first signal's number, else None) where stopping is safe, e.g. train.py between
    steps, and ends itself. A second signal ends the program at once, for a user who will not
    wait: a save it cuts short leaves no step (checkpoints are renamed into place whole).
    The handlers before are restored on leaving.
    """
    received: list[int] = []

    def record(signum: int, frame: object) -> None:
        del frame
        if received:
            exit_now(f"{prog}: interrupted again: stopped at once", signal_status(signum))
        received.append(signum)

    before = {s: signal.signal(s, record) for s in STOP_SIGNALS}
    try:
        yield lambda: received[0] if received else None
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def _undash(arg: str) -> str:
    """--video-out=x -> --video_out=x (config overrides, --config.a.b, are left as they are)."""
    name, eq, value = arg.partition("=")
    if name.startswith("--") and "." not in name:
        name = "--" + name[2:].replace("-", "_")
    return name + eq + value


def flags_parser(prog: str) -> Callable[[list[str]], list[str]]:
    """A `flags_parser` for `absl.app.run`: takes --foo-bar for --foo_bar, and ends a bad
    flag, an unknown config key or a config file that does not load through `fail`."""

    def parse(argv: list[str]) -> list[str]:
        args = [argv[0], *map(_undash, argv[1:])]
        try:
            return flags.FLAGS(args)
        except flags.Error as e:
            fail(prog, f"{e} (see {prog} --helpfull)")
        except (AttributeError, KeyError) as e:  # ml_collections: the locked config lacks a key
            key = re.search(r"(\w+)", str(e))
            hint = re.search(r'Did you mean "(\w+)"', str(e))
            overrides = [a.partition("=")[0] for a in args if a.startswith("--config.")]
            fail(prog, f"unknown config key {key and key[1]!r} (in {' '.join(overrides)}): the "
                       "config has no such field; "
                       + (f"did you mean {hint[1]!r}?" if hint else
                          "check the spelling against configs/default.py"))
        except Exception as e:  # the --config file itself: missing, or its code raised
            fail(prog, f"cannot load the --config file ({e}): check its path and its code")

    return parse


def main(prog: str, job: Callable[[], None]) -> None:
    """Runs `job` as the program `prog` (absl `app.run`): the flags parsed by `flags_parser`,
    orbax's per-file INFO logs off, the persistent compilation cache on, and bad input
    ending through `fail`."""

    def absl_main(argv: list[str]) -> None:
        if len(argv) > 1:  # absl passes what no flag took; a typo must not pass unnoticed
            fail(prog, f"unexpected argument {argv[1]!r}: {prog} takes flags only (a value "
                       "with spaces needs quotes; see --helpfull)")
        absl_logging.set_verbosity(absl_logging.WARNING)
        compilation.enable_cache()
        run_or_fail(prog, job)

    app.run(absl_main, flags_parser=flags_parser(prog))
