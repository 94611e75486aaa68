"""The environment CI installs: the runtime and test requirements apart, pinned to the versions
CI ran, and prepared data sets written and read without TensorFlow."""

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def test_tensorflow_is_not_installed():
    # requirements.txt pulls tensorflow-datasets; nothing it pulls may bring TensorFlow.
    assert importlib.util.find_spec("tensorflow") is None


def test_the_data_stack_imports_no_tensorflow():
    code = ("import sys, tensorflow_datasets, grain, array_record; "
            "import cwfcn.data.builders, cwfcn.data.prepared, cwfcn.data.training; "
            "print(sorted(m for m in sys.modules if m == 'tensorflow' "
            "or m.startswith('tensorflow.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _names(path: Path) -> set[str]:
    """The distributions a requirements file names (its own lines, not those it includes)."""
    out = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            out.add(canonicalize_name(Requirement(line).name))
    return out


def test_runtime_requirements_hold_no_test_tools_and_the_pins_cover_everything():
    runtime, test = _names(ROOT / "requirements.txt"), _names(ROOT / "requirements-test.txt")
    assert not runtime & {"pytest", "pytest-xdist", "hypothesis", "nbclient", "ipykernel", "ruff"}
    assert {"pytest", "ruff", "hypothesis"} <= test and not runtime & test
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version.strip()
    assert runtime | test <= set(pins), sorted(runtime | test - set(pins))
    # What CI installed is what the pins say (the test command installs with -c).
    for name in runtime | test:
        assert importlib.metadata.version(name) == pins[name], name
