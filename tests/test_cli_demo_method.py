"""The demo shows the method (issue 10 §6): ``python -m cddfm3d demo`` with and without editing networks.

In a temporary copy of the shipped assets (``CDDFM3D_ASSETS``) two hand-made editing networks are registered:
F^pose and F^light, :class:`LatentManipulator` s on the shipped layer sets with weights drawn from seeded
generators (an untrained one does not edit). The checks, each against something computed here:

* ``method_edits.png`` decoded cell by cell (``grid_cells``): per face, per attribute, a row of edits equal to
  :meth:`FaceEditor.series` of the sweep's edits on the same faces and noise, then a row of 3DMM renders of the
  target coefficients, which are written out here by hand (T's prediction with yaw moved by 10-degree steps, or
  the light's SH coefficients replaced by the sweep's directional light) and rendered with the renderer;
* ``demo.json["method"]``: the table against :func:`cddfm3d.editing.evaluate` called directly on the same fresh
  sources and noise (swap targets, the shipped recon);
* ``index.html``: the picture, the table's numbers under readable headers and the sentence of every measure;
* without editing networks: ``method`` is None, no picture, and the page says none are shipped.
"""
from __future__ import annotations

import html
import json
import math
import shutil

import numpy as np
import pytest
import torch

from cddfm3d import assets
from cddfm3d.cli import main
from cddfm3d.demo import METHOD_FACES, METHOD_SOURCES, METRIC_SENTENCES
from cddfm3d.editing.evaluation import PERFECT, evaluate, synthesize
from cddfm3d.editing.face_editor import FaceEditor
from cddfm3d.editing.labels import label_images
from cddfm3d.editing.manipulator import LatentManipulator
from cddfm3d.face3d.lighting import directional_light
from cddfm3d.face3d.render import render
from cddfm3d.world import mini_model
from tests.test_cli_demo import grid_cells

RES = 64
STEPS = (-2, -1, 0, 1, 2)                       # the sweep's steps: 10 degrees of yaw, 25 degrees of light azimuth
EDITED = ("pose", "light")
YAW = 224 + 1                                   # Deep3D's layout: angles 224:227 (pitch, yaw, roll)
GAMMA = slice(227, 254)


def copy_assets(tmp_path, monkeypatch):
    """The shipped assets without any editing network, as ``CDDFM3D_ASSETS``."""
    root = tmp_path / "assets"
    shutil.copytree(assets.assets_dir(), root)
    manifest = json.loads((root / "MANIFEST.json").read_text())
    for k in [k for k in manifest["assets"] if k.startswith("mini/manipulator/")]:
        (root / manifest["assets"].pop(k)["file"]).unlink()
    (root / "MANIFEST.json").write_text(json.dumps(manifest))
    monkeypatch.setenv(assets.ASSETS_ENV, str(root))
    assets.clear_verification_cache()
    return root


@pytest.fixture
def no_editing(tmp_path, monkeypatch):
    yield copy_assets(tmp_path, monkeypatch)
    assets.clear_verification_cache()


@pytest.fixture
def with_editing(tmp_path, monkeypatch):
    """The copy with F^pose and F^light registered; yields (root, {attribute: network})."""
    root = copy_assets(tmp_path, monkeypatch)
    G = assets.load("mini/generator")
    channels = [m.channels for m in G.style_layers]
    sets = assets.load("mini/layer_sets")
    nets = {}
    for k, a in enumerate(EDITED):
        F = LatentManipulator(a, channels, sorted(sets[a]))
        g = torch.Generator().manual_seed(10 + k)
        with torch.no_grad():
            for p in F.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        F.eval().save(root / "mini" / f"manipulator_{a}.safetensors")
        assets.register(f"mini/manipulator/{a}", f"mini/manipulator_{a}.safetensors", "editing.LatentManipulator",
                        F.config, "test", {})
        nets[a] = F
    yield root, nets
    assets.clear_verification_cache()


def u8_hwc(images: torch.Tensor) -> np.ndarray:
    """[B, 3, H, W] uint8 tensor -> [B, H, W, 3] numpy."""
    return images.permute(0, 2, 3, 1).numpy()


def test_demo_shows_the_shipped_editing_networks(with_editing, tmp_path):
    root, nets = with_editing
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--n", "2", "--channels", "1"]) == 0
    report = json.loads((out / "demo.json").read_text())
    method = report["method"]
    assert method["attributes"] == list(EDITED) and method["faces"] == METHOD_FACES
    assert method["n_sources"] == METHOD_SOURCES
    assert method["columns"] == {"pose": [f"yaw {10 * v:+g} deg" for v in STEPS],
                                 "light": [f"light azimuth {25 * v:+g} deg" for v in STEPS]}

    # ---- the picture: per face, per attribute, a row of edits, then a row of the targets' 3DMM renders
    ncol, rows_per_face = len(STEPS), 2 * len(EDITED)
    cells = grid_cells(out / "method_edits.png", RES, ncol, METHOD_FACES * rows_per_face * ncol)
    cells = cells.reshape(METHOD_FACES, len(EDITED), 2, ncol, RES, RES, 3)
    G = assets.load("mini/generator").eval()
    T = assets.load("mini/attribute_predictor").eval()
    editor = FaceEditor.load("mini")
    faces = torch.cat([editor.styles_from_seed(10_000 + i) for i in range(METHOD_FACES)])   # demo seed 0
    with torch.no_grad():
        P_s = T(faces)
    fm = mini_model()
    for k, a in enumerate(EDITED):
        _, edits = editor.sweep(a)
        images = editor.series(faces, list(range(METHOD_FACES)), edits)["images"]     # [5, faces, 3, 64, 64]
        for j, v in enumerate(STEPS):
            assert np.array_equal(cells[:, k, 0, j], u8_hwc(images[j])), (a, v)
            # the target coefficients, written out here: the source's, with yaw or the light replaced
            target = P_s.clone()
            if a == "pose":
                target[:, YAW] += math.radians(10 * v)
            else:
                target[:, GAMMA] = directional_light(25.0, 25 * v, 0.35).float()
            with torch.no_grad():
                rendered, _ = render(fm(target, image_size=RES), size=RES, supersample=2)
            expected = (rendered.permute(0, 2, 3, 1).numpy() * 255).round()
            diff = np.abs(cells[:, k, 1, j].astype(float) - expected)
            assert diff.max() <= 1, (a, v, diff.max())                # 8-bit rounding of the same render
        # an edit row changes with the offset; the render row follows the target
        assert not np.array_equal(cells[:, k, 0, 0], cells[:, k, 0, -1])
        assert not np.array_equal(cells[:, k, 1, 0], cells[:, k, 1, -1])

    # ---- this run's table: evaluate on the same fresh sources (swap targets), read by the shipped recon
    sources = torch.cat([editor.styles_from_seed(20_000 + i) for i in range(METHOD_SOURCES)])
    recon = assets.load("mini/recon").eval()
    with torch.no_grad():       # the perfect edit's coefficients: the recon's readings of the sources' images
        coeffs, _ = label_images(recon, synthesize(G, sources, list(range(METHOD_SOURCES))), fm)
    ref = evaluate(G, T, {"cddfm3d": nets}, sources, list(range(METHOD_SOURCES)), {"recon": recon},
                   targets=("swap",), attributes=list(EDITED), seed=0, reference=coeffs)
    assert [r["attribute"] for r in method["table"]] == list(EDITED)
    for r in method["table"]:
        sc = ref.score("cddfm3d", "recon", "swap", r["attribute"])
        assert r["completion"] == pytest.approx(sc.completion, abs=5e-4 + 1e-9), r
        assert r["leakage"] == pytest.approx(sc.offdiag_leakage, abs=5e-4 + 1e-9), r
        assert r["identity"] == pytest.approx(sc.identity, abs=5e-4 + 1e-9), r
        assert r["identity"] > 0 and r["leakage"] > 0          # the random networks do move other attributes
        ceiling = ref.score(PERFECT, "recon", "swap", r["attribute"])
        assert r["perfect_completion"] == pytest.approx(ceiling.completion, abs=5e-4 + 1e-9), r
        assert r["perfect_leakage"] == pytest.approx(ceiling.offdiag_leakage, abs=5e-4 + 1e-9), r
        assert 0 < r["perfect_completion"] < 1 and r["perfect_leakage"] > 0

    # ---- the page: the picture, the numbers under readable headers, one sentence per measure
    page = (out / "index.html").read_text()
    assert "src='method_edits.png'" in page
    for sentence in METRIC_SENTENCES.values():
        assert html.escape(sentence) in page
    assert set(METRIC_SENTENCES) == {"completion", "leakage", "identity", "perfect"}
    for header in ("edit completion", "leakage", "identity kept", "perfect edit: completion",
                   "perfect edit: leakage"):
        assert f">{header}<" in page, header
    for raw in ("offdiag_leakage", "n_sources", "'completion'"):
        assert raw not in page, raw
    for r in method["table"]:
        for key in ("completion", "leakage", "identity", "perfect_completion", "perfect_leakage"):
            assert f">{r[key]:.4g}<" in page, (r["attribute"], key)
    assert "No editing networks are shipped" not in page


def test_demo_without_editing_networks_says_so(no_editing, tmp_path):
    assert not [n for n in assets.available() if n.startswith("mini/manipulator/")]
    out = tmp_path / "out"
    assert main(["demo", "--out", str(out), "--n", "2", "--channels", "1"]) == 0
    report = json.loads((out / "demo.json").read_text())
    assert "method" in report and report["method"] is None
    assert not (out / "method_edits.png").exists()
    page = (out / "index.html").read_text()
    assert "No editing networks are shipped yet" in page and "method_edits.png" not in page
    for sentence in METRIC_SENTENCES.values():
        assert html.escape(sentence) not in page
