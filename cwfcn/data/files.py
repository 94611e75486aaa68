"""File helpers shared by the data set readers: clear errors for missing or mismatched files."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
from PIL import Image

from cwfcn.metrics import IGNORE_LABEL

__all__ = ["IGNORE_LABEL", "MissingFileError", "check_same_size", "read_ids", "read_rgb",
           "require"]


class MissingFileError(FileNotFoundError, ValueError):
    """A file or directory that a reader needs is missing; the message names it and the fix.

    Both a FileNotFoundError and a ValueError: bad input of every kind is a ValueError.
    """


def require(path: str | os.PathLike[str], fix: str) -> Path:
    """Return ``path`` if it exists, else raise MissingFileError naming it and the ``fix``."""
    path = Path(path)
    if not path.exists():
        raise MissingFileError(f"{path} not found; {fix}")
    return path


def require_file(path: str | os.PathLike[str], what: str) -> Path:
    """Return ``path`` if it is a file, else raise MissingFileError (errno ENOENT, the path
    as its filename) saying there is no such ``what``, e.g. "weight file"."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(errno.ENOENT, f"no such {what} (check the path)", str(path))
    return path


def read_rgb(path: str | os.PathLike[str], fix: str) -> np.ndarray:
    """Decode an image file as RGB.

    Args:
      path: any format Pillow reads (JPEG, PNG, PPM, ...); grey or CMYK images are converted.
      fix: what to do if the file is missing, for the error message.

    Returns:
      uint8 ``[H, W, 3]`` RGB array.
    """
    with Image.open(require(path, fix)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def read_ids(path: str | os.PathLike[str], fix: str) -> list[str]:
    """Read a split file: one id per line, blank lines and surrounding spaces dropped."""
    text = require(path, fix).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def check_same_size(
    image: np.ndarray,
    label: np.ndarray,
    image_path: str | os.PathLike[str],
    label_path: str | os.PathLike[str],
) -> None:
    """Raise ValueError unless ``label`` ``[H, W]`` matches ``image`` ``[H, W, 3]``."""
    if label.shape != image.shape[:2]:
        raise ValueError(
            f"label {label_path} is {label.shape[0]}x{label.shape[1]} but its image {image_path} "
            f"is {image.shape[0]}x{image.shape[1]} (HxW); the pair does not belong together: "
            "re-extract the data set or fix the file"
        )
