"""Prepare a data set once: ``python -m cwfcn.data.prepare NAME[/CONFIG] [--manual-dir RAW]
--data-dir OUT``.

Runs the TFDS builder `NAME` (`cwfcn.data.builders.BUILDERS`), each of its configs or the one
named, over the raw layout in ``RAW`` (its manual dir), writing array_record files under
``OUT/NAME/CONFIG/1.0.0``; read them with ``--data tfds:NAME/CONFIG --data-dir OUT``
(evaluate.py) or ``config.data.name = "tfds:NAME/CONFIG:SPLIT"`` (training). TFDS writes
into ``OUT/NAME/CONFIG/incomplete.*`` and renames it when every split is written, so an
interrupted build leaves nothing that reads as complete (an interrupted run's leftover is
removed by the next); a config already prepared is left as it is (``--overwrite`` rebuilds
it). Bad input (unknown name, missing or wrongly laid out manual dir) exits with status 2
and one line on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import io
import shutil
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from cwfcn import cli

PROG = "python -m cwfcn.data.prepare"


class PrepareError(ValueError):
    """A prepare that cannot run: the message names the problem and the fix."""


@dataclasses.dataclass(frozen=True)
class Prepared:
    """What `prepare` did for one config.

    Attributes:
      name: ``NAME/CONFIG``.
      path: the version directory it wrote or found.
      built: False when it was already prepared (nothing done).
      examples: split -> number of videos (or photos).
      seconds: the build's wall time (0 when nothing was done).
    """

    name: str
    path: Path
    built: bool
    examples: dict[str, int]
    seconds: float


def _builders():
    from cwfcn.data import builders  # tensorflow_datasets: not for --help's parse errors

    return builders


def _split_counts(builder) -> dict[str, int]:
    return {name: info.num_examples for name, info in builder.info.splits.items()}


def _check_manual_dir(name: str, instructions: str | None, manual_dir: str | None) -> Path | None:
    if instructions is None:
        return None  # fetched (the sample): no manual dir
    if not manual_dir:
        raise PrepareError(f"{name} reads raw files: pass --manual-dir RAW. {instructions}")
    path = Path(manual_dir).expanduser()
    if not path.is_dir():
        raise PrepareError(f"--manual-dir {path} is not a directory. {instructions}")
    if not any(path.iterdir()):
        raise PrepareError(f"--manual-dir {path} is empty. {instructions}")
    return path.resolve()


def prepare(spec: str, *, data_dir: str, manual_dir: str | None = None,
            overwrite: bool = False, progress: bool = True,
            log: Callable[[str], None] = print) -> list[Prepared]:
    """Build ``NAME`` (every config) or ``NAME/CONFIG`` into `data_dir`.

    Args:
      spec: ``NAME`` or ``NAME/CONFIG`` (`builders.BUILDERS`).
      data_dir: the TFDS data dir to write (created if missing).
      manual_dir: the raw layout (the builder's docstring); None for the sample.
      overwrite: rebuild configs already prepared.
      progress: show a progress bar per split.
      log: where to say what is done.

    Returns:
      One `Prepared` per config, in `BUILDER_CONFIGS` order.

    Raises:
      PrepareError: an unknown name or config, a missing or empty manual dir, a corrupt
        earlier build (without `overwrite`).
      ValueError, OSError: a wrong layout, from the data set's reader.
    """
    import tensorflow_datasets as tfds

    builders = _builders()
    name, _, config = spec.strip().partition("/")
    name = name.lower()
    if name not in builders.BUILDERS:
        raise PrepareError(f"unknown data set {spec!r}; use one of {', '.join(builders.BUILDERS)} "
                           f"(see {PROG} --help)")
    cls = builders.BUILDERS[name]
    try:
        configs = [builders.config_of(name, config)] if config else cls.BUILDER_CONFIGS
    except ValueError as e:
        raise PrepareError(str(e)) from None
    manual = _check_manual_dir(name, cls.MANUAL_DOWNLOAD_INSTRUCTIONS, manual_dir)
    if manual is None and manual_dir:
        log(f"{name}: fetches its files, --manual-dir {manual_dir} is not used")
    tfds.disable_progress_bar()  # the builders' bars know their totals (`CwfcnBuilder`)
    done = []
    for found in configs:
        builder = cls(config=found.name, data_dir=str(data_dir), progress=progress)
        label, path = f"{name}/{found.name}", Path(builder.data_path)
        if path.exists() and not overwrite:
            if not (path / "dataset_info.json").is_file():
                raise PrepareError(f"{path} exists but holds no dataset_info.json (a corrupt "
                                   f"build): rebuild it with {PROG} {label} ... --overwrite")
            log(f"{label}: already prepared in {path} (nothing to do; --overwrite rebuilds it)")
            done.append(Prepared(label, path, False, _split_counts(builder), 0.0))
            continue
        for leftover in path.parent.glob(f"incomplete.*_{path.name}"):
            log(f"{label}: removing {leftover.name}, left by an interrupted build")
            shutil.rmtree(leftover, ignore_errors=True)
        mode = (tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS if overwrite
                else tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS)
        start = time.perf_counter()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # TFDS's "Downloading ..." lines
                builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
                    manual_dir=None if manual is None else str(manual), download_mode=mode))
        except (ValueError, OSError) as e:  # the reader's: a wrong layout, a bad file
            where = f"--manual-dir {manual}" if manual else "the fetched files"
            raise PrepareError(f"{label}: {e} ({where}: see {cls.__name__}'s manual dir in "
                               f"{PROG} --help)") from e
        seconds = time.perf_counter() - start
        counts = _split_counts(builder)
        log(f"{label}: prepared {', '.join(f'{s} {n}' for s, n in counts.items())} in "
            f"{seconds:.1f} s into {path}; read it with --data tfds:{label} --data-dir "
            f"{data_dir}")
        missing = [s.name for s in found.splits if s.name not in counts]
        if missing:
            log(f"{label}: no {', '.join(missing)} split: the manual dir lacks its files "
                f"({cls.__name__}'s docstring)")
        done.append(Prepared(label, path, True, counts, seconds))
    return done


def _describe() -> str:
    """The builders, their configs with splits, and their manual dirs, for --help."""
    builders = _builders()
    lines = []
    for name, cls in builders.BUILDERS.items():
        configs = "; ".join(f"{c.name} ({', '.join(c.split_names)})" for c in cls.BUILDER_CONFIGS)
        lines.append(f"  {name}: {configs}")
        manual = cls.MANUAL_DOWNLOAD_INSTRUCTIONS or "no --manual-dir: the files are fetched."
        lines += textwrap.wrap(manual, 88, initial_indent="      ", subsequent_indent="      ")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line (main's), not usage + error
        raise PrepareError(f"{message} (see --help)")


def _parser() -> argparse.ArgumentParser:
    fill = functools.partial(textwrap.fill, width=92)
    parser = _Parser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=fill(
            "Prepare a data set as TFDS array_record files (no TensorFlow), once: each config "
            "of NAME, or NAME/CONFIG, from the raw files in --manual-dir into --data-dir. "
            "Preparing again is a no-op; an interrupted build leaves nothing read as complete. "
            "Read it with evaluate.py --data tfds:NAME[/CONFIG][:SPLIT] --data-dir OUT, or "
            "train with config.data.name = 'tfds:NAME/CONFIG:SPLIT'."),
        epilog=(fill("data sets: NAME: CONFIG (SPLITS; the first is the evaluation split), "
                     "then what --manual-dir holds:") + f"\n{_describe()}\n\n" + fill(
                "TFDS's own build command (tfds build --imports cwfcn.data.builders) runs them "
                f"too: {PROG} tfds-build NAME[/CONFIG] --manual_dir RAW --data_dir OUT [tfds "
                "build flags] (the `tfds` script itself imports TensorFlow).")))
    parser.add_argument("spec", metavar="NAME[/CONFIG]", help="the data set (all its configs) "
                        "or one config, e.g. cwfcn_pascal/shift16")
    parser.add_argument("--manual-dir", metavar="RAW",
                        help="the raw layout the builder reads (see below)")
    parser.add_argument("--data-dir", required=True, metavar="OUT",
                        help="the TFDS data dir to write (read with --data-dir OUT)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rebuild configs already prepared (e.g. a corrupt one)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def tfds_build(argv: Sequence[str]) -> None:
    """TFDS's ``tfds build`` command on these builders (``--imports cwfcn.data.builders``),
    run without the `tfds` script, which imports TensorFlow (its convert_format command):
    ``python -m cwfcn.data.prepare tfds-build NAME[/CONFIG] --manual_dir RAW --data_dir OUT``
    takes ``tfds build``'s flags. The builders write array_record by default."""
    import simple_parsing
    from tensorflow_datasets.scripts.cli import build

    argv = list(argv)
    if not any(a.split("=")[0] in ("--imports", "-i", "--module_import") for a in argv):
        argv += ["--imports", "cwfcn.data.builders"]
    simple_parsing.parse(build.Args, args=argv, prog=f"{PROG} tfds-build").execute()


def main(argv: Sequence[str] | None = None) -> int:
    """The command line. Returns the exit status: 0, 2 for bad input (one line on stderr,
    `cli.one_line`), 130 for an interrupt."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["tfds-build"]:
        tfds_build(argv[1:])
        return 0
    try:
        args = _parser().parse_args(argv)
        prepare(args.spec, data_dir=args.data_dir, manual_dir=args.manual_dir,
                overwrite=args.overwrite, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"prepare: interrupted: the config being built was not kept; run {PROG} again",
              file=sys.stderr)
        return 130
    except cli.ERRORS as e:
        print(f"prepare: error: {cli.one_line(e)}", file=sys.stderr)
        return cli.USAGE_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
