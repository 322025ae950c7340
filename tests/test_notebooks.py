"""Every notebook in notebooks/ runs top to bottom without a cell error.

The notebooks are executed with nbclient in a fresh ipykernel started from *this* Python
(a kernelspec written into a temporary folder, so a stale user-level ``python3`` kernel can
never be picked up), with the notebooks folder as working directory. All notebooks share one
temporary ``WORK_DIR`` (injected into their parameter cell), so 03_track_finding fine-tunes
from the checkpoint that 02_pretraining just wrote, and nothing lands in the repository.

Set ``GNN_JEPA_NOTEBOOK_OUT=<folder>`` to keep the executed notebooks (with their figures).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = {"01_event_display.ipynb", "02_pretraining.ipynb", "03_track_finding.ipynb"}


def _parameter_cell(nb) -> int:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert "parameters" in cell.metadata.get("tags", []), \
                f"the first code cell (cell {i}) must be the one tagged 'parameters'"
            return i
    raise AssertionError("notebook has no code cell")


def test_notebooks_present_and_clean():
    """The three notebooks exist, are stored without outputs, and start with a parameter cell."""
    assert EXPECTED <= {p.name for p in NOTEBOOKS}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                assert cell.outputs == [], f"{path.name} cell {i} has stored outputs"
                assert cell.execution_count is None, f"{path.name} cell {i} has an execution count"
        _parameter_cell(nb)


@pytest.fixture(scope="module")
def kernel_spec_manager(tmp_path_factory):
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager

    kernels = tmp_path_factory.mktemp("kernels")
    # argv [sys.executable, "-m", "ipykernel_launcher", ...]: the kernel runs this interpreter
    write_kernel_spec(path=str(kernels / "python3"))
    return KernelSpecManager(kernel_dirs=[str(kernels)])


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebook_work")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, kernel_spec_manager, work_dir, monkeypatch):
    from jupyter_client.manager import KernelManager

    monkeypatch.setenv("WANDB_MODE", "disabled")
    # One torch thread: when other jobs load the cores, oversubscribed intra-op threads made
    # a pretraining step ~8x slower (1-5 s instead of 0.25 s on 2 loaded cores).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the kernel must import this checkout's gnn_jepa, installed or not
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    nb = nbformat.read(path, as_version=4)
    cell = nb.cells[_parameter_cell(nb)]
    if "WORK_DIR" in cell.source:
        cell.source += f"\nWORK_DIR = {str(work_dir)!r}  # injected by tests/test_notebooks.py"
    km = KernelManager(kernel_name="python3", kernel_spec_manager=kernel_spec_manager)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", km=km,
                                     resources={"metadata": {"path": str(NOTEBOOK_DIR)}})
    try:
        client.execute()  # a cell error raises CellExecutionError with the traceback
    finally:
        keep = os.environ.get("GNN_JEPA_NOTEBOOK_OUT")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, Path(keep) / path.name)
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert images, f"{path.name} drew no figure"
