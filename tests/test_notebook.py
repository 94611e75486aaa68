"""The Colab notebook runs top to bottom on a CPU (SMOKE mode: tiny config, synthetic videos).

The kernel is ipykernel's own `python3` spec, which ipykernel installs under
`sys.prefix/share/jupyter/kernels`; jupyter_client starts it with this interpreter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ipykernel  # noqa: F401  (the kernel the notebook runs on; a test dependency)
import nbclient
import nbformat
import pytest

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "clockwork_colab.ipynb"


def _text(outputs) -> str:
    """The printed text of a cell's outputs (streams and text/plain results)."""
    parts = []
    for out in outputs:
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


def test_notebook_is_committed_clean():
    nb = json.loads(NOTEBOOK.read_text())
    assert nb["nbformat"] == 4
    nbformat.validate(nbformat.reads(NOTEBOOK.read_text(), as_version=4))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, cell["source"]


@pytest.mark.slow
def test_notebook_runs_in_smoke_mode(tmp_path, monkeypatch):
    monkeypatch.setenv("CWFCN_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("CWFCN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    # The kernel finds ipykernel's spec next to this interpreter, even without
    # `python -m ipykernel install` or a Jupyter data dir of its own.
    monkeypatch.setenv("JUPYTER_PATH", str(Path(sys.prefix) / "share" / "jupyter"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=120,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o.get("output_type") == "error"]
    text = "\n".join(_text(c.outputs) for c in code)
    assert "not on Colab: nothing to install" in text
    assert "SMOKE=True, data=synthetic" in text
    assert "cpu" in text.lower()
    for schedule in ("oracle", "skip", "exponential", "alternating", "adaptive:0.25",
                     "pipeline2", "pipeline3", "pool4", "pool3", "adaptive:0.1", "adaptive:0.3"):
        assert schedule in text
    assert "mean IU" in text and "fired S1/S2/S3" in text
    data = [o.get("data", {}) for c in code for o in c.outputs]
    assert sum("image/png" in d for d in data) >= 2  # trade-off and timeline
    videos = [d["text/html"] for d in data if "<video" in d.get("text/html", "")]
    assert len(videos) == 1 and "data:video/mp4;base64," in videos[0]
    assert "step 1: loss" in text and "step 2: loss" in text
