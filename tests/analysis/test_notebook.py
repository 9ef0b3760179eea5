"""The scaling-curves notebook (jupytext .py) executes against a synthetic results file and
against the committed cpu-demo results (`make demo` regenerates them)."""

import jupytext
import pytest
from nbclient import NotebookClient

from analysis.synthetic import two_family_rows, write_jsonl
from tests.helpers import REPO

NOTEBOOK = REPO / "analysis" / "notebooks" / "scaling_curves.py"


DEMO_RESULTS = REPO / "results" / "cpu-demo" / "results.jsonl"


def _execute(results, monkeypatch, val_set=None):
    monkeypatch.setenv("HYBRID_JAX_RESULTS", str(results))
    monkeypatch.setenv("HYBRID_JAX_BOOTSTRAP", "5")
    if val_set:
        monkeypatch.setenv("HYBRID_JAX_VAL_SET", val_set)
    nb = jupytext.read(NOTEBOOK)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 5
    text = "".join(o.get("text", "") for o in outputs)
    assert "points from" in text


@pytest.mark.slow
def test_notebook_executes(tmp_path, monkeypatch):
    _execute(write_jsonl(two_family_rows(1.5, noise=0.004, seed=5), tmp_path / "results.jsonl"),
             monkeypatch)


@pytest.mark.slow
def test_notebook_executes_on_demo_results(monkeypatch):
    assert DEMO_RESULTS.is_file(), f"{DEMO_RESULTS} is committed; regenerate it with `make demo`"
    _execute(DEMO_RESULTS, monkeypatch, val_set="mean")
