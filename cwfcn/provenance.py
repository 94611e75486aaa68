"""Where a result came from: package versions, device and git revision, for results JSON.

Two runs that agree here (and in their config and seed) give the same numbers on the
same machine: training is bitwise reproducible and evaluation deterministic.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

import jax

PACKAGES = ("cwfcn", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "av",
            "ml-collections")
ROOT = Path(__file__).resolve().parents[1]


def versions() -> dict[str, str | None]:
    """{"python": ..., package: version or None if not installed} for `PACKAGES`."""
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def git_revision(root: str | Path = ROOT) -> str | None:
    """The commit of the checkout at `root`, "+dirty" if files differ from it; None outside git."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()

    try:
        revision = git("rev-parse", "HEAD")
        return revision + ("+dirty" if git("status", "--porcelain", "--untracked-files=no")
                           else "")
    except (OSError, subprocess.SubprocessError):
        return None


def record() -> dict:
    """{"versions", "device", "platform", "git_revision"}: what a results file should say."""
    device = jax.devices()[0]
    return {
        "versions": versions(),
        "device": f"{device.platform}: {device.device_kind} (x{jax.device_count()})",
        "platform": platform.platform(),
        "git_revision": git_revision(),
    }
