"""The CLI and the main job."""
import json
import subprocess
import sys

import numpy as np
import torch

from cddfm3d.cli import main
from cddfm3d.demo import EDIT_SIGMAS
from cddfm3d.face3d.viz import PANEL_ZOOM
from cddfm3d.stylegan2 import channel_sensitivity, save_generator, top_channels
from tests.test_stylegan2_generator import small_generator


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "cddfm3d", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout


def grid_cells(path, size: int, nrow: int, n: int, padding: int = 2) -> np.ndarray:
    """Decode a PNG written from ``viz.grid`` of ``n`` images of ``size`` px, ``nrow`` a row; check its layout
    (width and height from the cell count, white padding) and return the cells [n, size, size, 3] uint8."""
    from PIL import Image

    image = Image.open(path)
    cols, rows = min(nrow, n), -(-n // nrow)
    step = size + padding
    assert image.mode == "RGB" and image.size == (cols * step + padding, rows * step + padding), path
    a = np.asarray(image)
    inside = np.zeros(a.shape[:2], bool)
    cells = []
    for k in range(n):
        top, left = padding + (k // nrow) * step, padding + (k % nrow) * step
        inside[top:top + size, left:left + size] = True
        cells.append(a[top:top + size, left:left + size])
    assert (a[~inside] == 255).all(), path   # the frame, the gaps and any empty cells are white
    return np.stack(cells)


def test_demo_writes_outputs(tmp_path):
    """The main job on the shipped mini world: every image (decoded, laid out as n, nrow, the resolution and the
    zoom say), the report and the page."""
    n, channels, res = 4, 2, 64
    assert main(["demo", "--out", str(tmp_path / "out"), "--n", str(n), "--channels", str(channels)]) == 0
    out = tmp_path / "out"
    report = json.loads((out / "demo.json").read_text())
    assert len(report["edited_channels"]) == channels and report["resolution"] == res
    assert set(report["shipped_metrics"]) == {"mini/generator", "mini/recon"}
    assert "fd_recon_features" in report["shipped_metrics"]["mini/generator"]
    assert 0 < report["run_metrics"]["photometric_samples"] < 1
    page = (out / "index.html").read_text()
    names = ("samples.png", "reconstruction_overlay.png", "landmarks.png", "toon.png", "stylespace_edits.png")
    for name in names:
        assert f"src='{name}'" in page

    nrow = min(8, n)
    samples = grid_cells(out / "samples.png", res, nrow, n)
    grid_cells(out / "reconstruction_overlay.png", res, nrow, n)
    grid_cells(out / "toon.png", res, nrow, n)
    # the landmark panels are the samples upscaled PANEL_ZOOM times (nearest), with at most 68 green 3 x 3 dots
    panels = grid_cells(out / "landmarks.png", res * PANEL_ZOOM, nrow, n)
    upscaled = samples.repeat(PANEL_ZOOM, 1).repeat(PANEL_ZOOM, 2)
    changed = (panels != upscaled).any(-1)
    assert (panels[changed] == [0, 255, 0]).all()
    assert 0 < changed.sum(axis=(1, 2)).max() <= 68 * 9
    # one row per edited channel, one column per sigma; the sigma-0 column is the first sample, unedited
    edits = grid_cells(out / "stylespace_edits.png", res, len(EDIT_SIGMAS), channels * len(EDIT_SIGMAS))
    centre = EDIT_SIGMAS.index(0.0)
    for row in range(channels):
        diff = np.abs(edits[row * len(EDIT_SIGMAS) + centre].astype(int) - samples[0].astype(int))
        assert diff.max() <= 1, row   # PNG rounding of the same image computed in another batch


def test_demo_refuses_a_generator_of_another_size(tmp_path, capsys):
    gpath = tmp_path / "g.safetensors"
    save_generator(small_generator(), gpath)
    assert main(["demo", "--out", str(tmp_path / "out"), "--generator", str(gpath), "--n", "2"]) == 2
    assert "64 px" in capsys.readouterr().err


def test_demo_reports_missing_generator(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--generator", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err


def test_channel_sensitivity_matches_finite_differences():
    G = small_generator()
    sens = channel_sensitivity(G, n=4, probes=256, seed=1, batch_size=4)
    g = torch.Generator().manual_seed(1)
    z = torch.randn(4, G.z_dim, generator=g)
    with torch.no_grad():
        styles = G.w_to_styles(G.mapping(z))
        base = G.synthesis_from_styles(styles, noise="const")
        eps = 1e-3
        for layer, channel in [(0, 3), (3, 7), (1, 2), (9, 5)]:
            s2 = [s.clone() for s in styles]
            s2[layer][:, channel] += eps
            d = (G.synthesis_from_styles(s2, noise="const") - base) / eps
            exact = d.square().mean().sqrt().item()
            assert abs(sens[layer][channel].item() - exact) <= 0.2 * exact + 1e-6, (layer, channel)
    top = top_channels(sens, G.style_layers, k=3)
    assert all(not G.style_layers[li].is_torgb for li, _, _ in top)
    assert top[0][2] >= top[1][2] >= top[2][2]
