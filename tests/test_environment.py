"""The environment CI installs: prepared data sets are written and read without TensorFlow."""

import importlib.util
import subprocess
import sys


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
