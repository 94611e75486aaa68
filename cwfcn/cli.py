"""What train.py and evaluate.py share: their main, flag parsing and one-line errors.

Bad input of any kind (a flag, a config override, a data or weight file, a full disk)
ends the program with `<prog>: error: <the problem and the fix>` on one line of stderr
and exit status 2, never a traceback.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn

from absl import app, flags
from absl import logging as absl_logging

from cwfcn import compilation

USAGE_ERROR = 2  # the exit status of bad input, as argparse's
ERRORS = (ValueError, OSError)  # what the library raises for bad input and failed I/O


def one_line(error: object) -> str:
    """The message of `error` on one line (library messages may hold newlines)."""
    return " ".join(str(error).split())


def fail(prog: str, error: object) -> NoReturn:
    """Prints `<prog>: error: <error>` to stderr and exits with `USAGE_ERROR` at once.

    Logging stops first and the exit skips the interpreter's shutdown: library threads
    (orbax's writers) may still report the same failure, with tracebacks, meanwhile.
    """
    logging.disable(logging.CRITICAL)
    print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(USAGE_ERROR)


def run_or_fail(prog: str, body: Callable[[], None]) -> None:
    """Runs `body`; a `ERRORS` exception ends the program through `fail`."""
    try:
        body()
    except ERRORS as e:
        fail(prog, e)


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
        del argv
        absl_logging.set_verbosity(absl_logging.WARNING)
        compilation.enable_cache()
        run_or_fail(prog, job)

    app.run(absl_main, flags_parser=flags_parser(prog))
