"""The Colab notebook: its text pair is in sync, and it runs top to bottom on CPU."""

import json
import os

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "notebooks", "n3jax_colab.ipynb")
PAIRED = os.path.join(REPO, "notebooks", "n3jax_colab.py")
FIGURES = ("camera.png", "upload.png", "n3block_weights.png", "n3block_neighbours.png",
           "n3block_temperature.png", "pointset_knn.png", "training_loss.png")


def test_notebook_and_its_text_pair_hold_the_same_cells():
  import jupytext
  import nbformat
  text = jupytext.read(PAIRED)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  assert [(c.cell_type, c.source.strip()) for c in nb.cells] == [
      (c.cell_type, c.source.strip()) for c in text.cells], \
      "run `jupytext --sync notebooks/n3jax_colab.py` after editing either file"
  assert not any(c.get("outputs") for c in nb.cells), "commit the notebook without outputs"


@pytest.mark.slow
def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
  import nbclient
  import nbformat
  from PIL import Image
  upload = tmp_path / "my photo.png"
  rng = np.random.default_rng(0)
  smooth = np.kron(rng.random((6, 8, 3)), np.ones((16, 16, 1)))  # a 96x128 RGB "photo"
  Image.fromarray((255 * smooth).astype(np.uint8)).save(upload)
  figures = tmp_path / "figures"
  monkeypatch.setenv("N3JAX_NOTEBOOK_FIGURES", str(figures))
  monkeypatch.setenv("N3JAX_NOTEBOOK_IMAGE", str(upload))
  monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(tmp_path)}}).execute()
  for name in FIGURES:
    assert (figures / name).stat().st_size > 5000, name
  summary = json.loads((figures / "summary.json").read_text())
  assert summary["compile_s"] > 0 and summary["run_s"] > 0
  assert summary["upload_shape"] == [96, 128, 3]
  np.testing.assert_allclose(summary["query_weight_sums"], 1.0, atol=1e-4)
  assert summary["train_last_loss"] < 0.5 * summary["train_first_loss"]
  assert np.isfinite(summary["pointset_grad_temperature"])
  if summary["weights"].endswith("n3net_gauss_sigma25.t7"):  # ../shared is present
    assert summary["candidates"] == 224 and summary["k"] == 7
    assert summary["camera_denoised_psnr"] > summary["camera_noisy_psnr"] + 8
    assert summary["upload_denoised_psnr"] > summary["upload_noisy_psnr"] + 5
