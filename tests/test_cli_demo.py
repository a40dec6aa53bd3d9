"""The CLI and the main job."""
import json
import subprocess
import sys

import torch

from cddfm3d.cli import main
from cddfm3d.stylegan2 import channel_sensitivity, save_generator, top_channels
from tests.test_stylegan2_generator import small_generator


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "cddfm3d", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout


def test_demo_writes_outputs(tmp_path):
    G = small_generator()
    gpath = tmp_path / "g.safetensors"
    save_generator(G, gpath)
    assert main(["demo", "--out", str(tmp_path / "out"), "--generator", str(gpath), "--n", "4",
                 "--channels", "2"]) == 0
    for name in ("samples.png", "stylespace_edits.png", "index.html", "demo.json"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    report = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert len(report["edited_channels"]) == 2 and report["style_dim"] == G.style_dim
    from PIL import Image

    im = Image.open(tmp_path / "out" / "samples.png")
    assert im.size[0] > 4 * 32


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
    assert all(not G.style_layers[l].is_torgb for l, _, _ in top)
    assert top[0][2] >= top[1][2] >= top[2][2]
