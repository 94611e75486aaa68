"""What train.py and evaluate.py share: their main, flag parsing and one-line errors.

Bad input of any kind (a flag, a config override, a data or weight file, a full disk)
ends the program with `<prog>: error: <the problem and the fix>` on one line of stderr
and exit status 2, never a traceback. Ctrl-C ends it with one line and status 130, SIGTERM
with one line and status 143 (raised as `Terminated`, so that both unwind alike: a live run
still writes its row); within `deferred_signals` (train.py's steps) SIGINT and SIGTERM wait
for a safe point instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import stat
import sys
from collections.abc import Callable, Iterator
from typing import NoReturn

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from cwfcn import compilation, hostmem
from cwfcn.data.samples import SampleFetchError

USAGE_ERROR = 2  # the exit status of bad input, as argparse's
# What the library raises for bad input and failed I/O: every error class of cwfcn's own is
# one of these (tests/test_reliability.py checks), so none ends in a traceback.
ERRORS = (ValueError, OSError, SampleFetchError)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # what `deferred_signals` defers
_OVERRIDE = re.compile(r"--?(no)?config(\.[A-Za-z_]\w*|\[-?\d+\])+")  # --config.a.b, a[0]
_HELP = ("help", "helpfull", "helpshort", "helpxml", "?")  # absl's help flags


class Terminated(KeyboardInterrupt):
    """SIGTERM (`main`'s handler raises it): a stop asked for, handled where Ctrl-C is."""


def _raise_terminated(signum: int, frame: object) -> NoReturn:
    del signum, frame
    raise Terminated


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
    """Runs `body`; a `ERRORS` exception ends the program through `fail`, a Ctrl-C (or
    `Terminated`) outside `deferred_signals` with one line and status 130 (or 143)."""
    try:
        body()
    except ERRORS as e:
        fail(prog, e)
    except KeyboardInterrupt as stop:
        signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        exit_now(f"{prog}: interrupted ({signum.name})", signal_status(signum))


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


def _flag_file_error(flag: str, path: str) -> str | None:
    """Why the file `path` of `flag` cannot be read to its end, or None if it can."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return f"{flag} {path!r}: {e.strerror or e}: check its path"
    if stat.S_ISDIR(mode):
        return f"{flag} {path!r} is a directory: pass a file"
    if not stat.S_ISREG(mode):  # a device (/dev/zero, /dev/full) never ends, a FIFO waits
        return f"{flag} {path!r} is not a regular file (a device or a pipe): pass a file"
    return None


def check_flag_files(prog: str, argv: list[str], depth: int = 0) -> None:
    """Ends the program through `fail` unless each --flagfile (nested ones too) and the
    --config file of `argv` is a regular file: absl and ml_collections read them whole, at
    import and while parsing, so /dev/zero would never end, a FIFO wait forever and a
    missing flag file end in absl's traceback."""
    args = iter(argv[1:])
    for arg in args:
        if arg == "--":  # the flags end here
            break
        name, eq, value = arg.lstrip("-").partition("=")
        if not arg.startswith("-") or name not in ("flagfile", "config"):
            continue
        if not eq:
            value = next(args, None)
            if value is None:
                return  # absl reports the missing value
        if not value:
            continue  # an empty --flagfile is ignored; an empty --config fails in the parser
        path = value.split(":", 1)[0] if name == "config" else value  # config.py:ARG
        if (error := _flag_file_error(f"--{name}", path)) is not None:
            fail(prog, error)
        if name == "flagfile" and depth < 10:  # absl stops a longer chain as circular
            try:
                with open(path, errors="replace") as f:
                    lines = [line.strip() for line in f]
            except OSError as e:
                fail(prog, f"--flagfile {path!r}: {e.strerror or e}: check its path")
            check_flag_files(prog, [argv[0], *lines], depth + 1)


def define_config(prog: str, default: str, *, program: bool | None = None) -> None:
    """Defines the --config flag (a config file, `default` if not given, its overrides
    --config.a.b=v). ml_collections reads sys.argv, --flagfile included, and loads the
    config with its overrides (the default one: until --config is parsed) already here: bad
    input ends the program through `fail`, as in `flags_parser`. `program`: whether this
    runs as the program (not an import); None: when sys.argv[0] is `prog`."""
    if program is None:
        program = os.path.basename(sys.argv[0]) == prog
    argv = sys.argv if program else None  # else an import
    if argv is not None:
        check_args(prog, argv)
    try:
        config_flags.DEFINE_config_file("config", default, "Config file.", lock_config=True)
    except Exception as e:
        if argv is None:
            raise
        fail_parse(prog, argv, e)


def check_args(prog: str, args: list[str]) -> None:
    """Ends the program through `fail` for what ml_collections and absl would not report in
    a line: a bad flag file (`check_flag_files`) or a config override whose path is no
    field's (--config.a-b: ml_collections would evaluate it as Python)."""
    check_flag_files(prog, args)
    for arg in args[1:]:
        if arg == "--":
            break
        name = arg.partition("=")[0]
        if re.match(r"--?(no)?config[.\[]", name) and not _OVERRIDE.fullmatch(name):
            fail(prog, f"bad config override {name!r}: give a field's path, in underscores, "
                       "e.g. --config.train.log_every=10")


def _untraced(message: str) -> str:
    """`message` with a traceback in it (ml_collections puts the config file's into its
    error) cut to its last line, the exception itself."""
    head, found, trace = message.partition("Traceback (most recent call last)")
    if not found:
        return message
    lines = [line.strip() for line in trace.splitlines() if line.strip()]
    head = head.replace("Error whilst parsing config file", "").rstrip(" :\n")
    return f"{head}: the config file raised {lines[-1] if lines else 'an error'}"


def fail_parse(prog: str, args: list[str], error: Exception) -> NoReturn:
    """Ends the program through `fail` for `error`, raised parsing the flags `args`."""
    if isinstance(error, flags.Error):
        fail(prog, f"{_untraced(str(error))} (see {prog} --helpfull)")
    if isinstance(error, (AttributeError, KeyError)):  # the locked config lacks a key
        key = re.search(r"(\w+)", str(error))
        hint = re.search(r'Did you mean "(\w+)"', str(error))
        overrides = [a.partition("=")[0] for a in args if a.startswith("--config.")]
        fail(prog, f"unknown config key {key and key[1]!r} (in {' '.join(overrides)}): the "
                   "config has no such field; "
                   + (f"did you mean {hint[1]!r}?" if hint else
                      "check the spelling against configs/default.py"))
    if isinstance(error, ValueError):  # a flag's check outside absl's parser (--stderrthreshold)
        fail(prog, f"{_untraced(str(error))} (see {prog} --helpfull)")
    # the --config file itself: missing, or its code raised
    fail(prog, f"cannot load the --config file ({error}): check its path and its code")


def flags_parser(prog: str) -> Callable[[list[str]], list[str]]:
    """A `flags_parser` for `absl.app.run`: takes --foo-bar for --foo_bar, and ends a bad
    flag, an unknown config key or a config file that does not load through `fail`
    (`check_args`, `fail_parse`); --help exits 0."""

    def parse(argv: list[str]) -> list[str]:
        args = [argv[0], *map(_undash, argv[1:])]
        check_args(prog, args)
        try:
            return flags.FLAGS(args)
        except SystemExit as e:  # absl's --help and --helpfull exit 1 after the help
            if e.code == 1 and any(a.lstrip("-").partition("=")[0] in _HELP for a in args):
                sys.exit(0)
            raise
        except Exception as e:
            fail_parse(prog, args, e)

    return parse


def main(prog: str, job: Callable[[], None]) -> None:
    """Runs `job` as the program `prog` (absl `app.run`): the flags parsed by `flags_parser`,
    orbax's per-file INFO logs off, the persistent compilation cache on, malloc's arenas
    capped (`hostmem.limit_arenas`), SIGTERM raising `Terminated`, and bad input ending
    through `fail`."""

    def absl_main(argv: list[str]) -> None:
        if len(argv) > 1:  # absl passes what no flag took; a typo must not pass unnoticed
            fail(prog, f"unexpected argument {argv[1]!r}: {prog} takes flags only (a value "
                       "with spaces needs quotes; see --helpfull)")
        absl_logging.set_verbosity(absl_logging.WARNING)
        compilation.enable_cache()
        hostmem.limit_arenas()
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            run_or_fail(prog, job)
        finally:  # a caller in this process (a test, a notebook) gets its own handler back
            signal.signal(signal.SIGTERM, previous)

    app.run(absl_main, flags_parser=flags_parser(prog))
