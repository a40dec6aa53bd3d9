"""The CLI and the main job."""
import json
import subprocess
import sys

import torch

from cddfm3d.cli import main
from cddfm3d.face3d.viz import PANEL_ZOOM
from cddfm3d.stylegan2 import channel_sensitivity, save_generator, top_channels
from tests.test_stylegan2_generator import small_generator


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "cddfm3d", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout


def test_demo_writes_outputs(tmp_path):
    """The main job on the shipped mini world: every image, the report and the page."""
    assert main(["demo", "--out", str(tmp_path / "out"), "--n", "4", "--channels", "2"]) == 0
    names = ("samples.png", "reconstruction_overlay.png", "landmarks.png", "toon.png", "stylespace_edits.png",
             "index.html", "demo.json")
    for name in names:
        assert (tmp_path / "out" / name).stat().st_size > 0
    report = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert len(report["edited_channels"]) == 2 and report["resolution"] == 64
    assert set(report["shipped_metrics"]) == {"mini/generator", "mini/recon"}
    assert "fd_recon_features" in report["shipped_metrics"]["mini/generator"]
    assert 0 < report["run_metrics"]["photometric_samples"] < 1
    page = (tmp_path / "out" / "index.html").read_text()
    for name in names[:5]:
        assert f"src='{name}'" in page
    from PIL import Image

    assert Image.open(tmp_path / "out" / "samples.png").size[0] > 4 * 64
    assert Image.open(tmp_path / "out" / "landmarks.png").size[0] > 4 * 64 * PANEL_ZOOM  # zoomed for the landmarks


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
