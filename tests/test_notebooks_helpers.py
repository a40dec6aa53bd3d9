"""Helpers the notebooks import from the package: light direction, tables, landmark panels, reconstruction rows,
CPU threads for interactive work, and the plotly renderer that survives an HTML export."""
import html.parser
import math

import pytest
import torch

from cddfm3d import config, viz
from cddfm3d.face3d.lighting import INIT_AMBIENT, directional_light, light_angles_deg, light_direction, sh_basis
from cddfm3d.face3d.viz import PANEL_ZOOM, landmark_panel, reconstruction_rows


def _fibonacci_sphere(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64) + 0.5
    y = 1 - 2 * k / n
    r = (1 - y * y).sqrt()
    phi = k * math.pi * (3 - math.sqrt(5))
    return torch.stack([r * torch.cos(phi), y, r * torch.sin(phi)], -1)


def test_light_direction_is_the_brightest_normal():
    """Brute force: among 200k unit normals, the one the SH light makes brightest is the returned direction."""
    g = torch.Generator().manual_seed(3)
    normals = _fibonacci_sphere(200_000)              # spacing ~ 0.45 degrees
    basis = sh_basis(normals)                          # [N, 9]
    for _ in range(6):
        gamma = torch.zeros(3, 9, dtype=torch.float64)
        gamma[:, 1:4] = torch.randn(3, generator=g, dtype=torch.float64)          # one first-order light ...
        gamma[:, 1:4] *= torch.rand(3, 1, generator=g, dtype=torch.float64) + 0.5  # ... tinted per colour
        gamma[:, 0] = torch.randn(3, generator=g, dtype=torch.float64) * 0.1      # and an ambient offset
        irradiance = (basis @ gamma.T).sum(-1) + INIT_AMBIENT * basis[:, 0] * 3
        brightest = normals[irradiance.argmax()]
        d = light_direction(gamma.reshape(27))
        assert d.shape == (3,) and abs(d.norm().item() - 1) < 1e-12
        angle = torch.rad2deg(torch.acos((d @ brightest).clamp(-1, 1))).item()
        assert angle < 0.6, angle


def test_light_angles_invert_the_prior_direction():
    """A direction from (elevation, azimuth) as the light prior writes it, lit through sh_basis, reads back."""
    elev = torch.tensor([-60.0, -10.0, 0.0, 25.0, 40.0, 80.0], dtype=torch.float64)
    azim = torch.tensor([-150.0, -30.0, 0.0, 10.0, 90.0, 170.0], dtype=torch.float64)
    e, a = torch.deg2rad(elev), torch.deg2rad(azim)
    d = torch.stack([torch.cos(e) * torch.sin(a), torch.sin(e), torch.cos(e) * torch.cos(a)], -1)
    # The first-order gamma whose irradiance is 0.3 * (n . d): solve sh_basis(n)[1:4] . g = 0.3 n . d on the axes.
    axes = torch.eye(3, dtype=torch.float64)
    band1 = sh_basis(axes)[:, 1:4]                     # [3 axes, 3 coefficients]
    g1 = torch.linalg.solve(band1, 0.3 * d.T).T        # [6, 3]
    gamma = torch.zeros(6, 3, 9, dtype=torch.float64)
    gamma[:, :, 1:4] = g1[:, None, :]
    got_e, got_a = light_angles_deg(gamma.reshape(6, 27))
    assert torch.allclose(got_e, elev, atol=1e-9) and torch.allclose(got_a, azim, atol=1e-9)


def test_directional_light_inverts_light_angles_and_has_its_strength():
    """directional_light(e, a, strength, ambient) -> light_angles_deg gives (e, a) back; on a fibonacci sphere the
    brightest irradiance over the DC irradiance is 1 + strength (band 1 adds strength x DC at the light direction),
    and the DC coefficient is the ambient offset."""
    elev = torch.tensor([-30.0, 0.0, 25.0, 60.0], dtype=torch.float64)
    azim = torch.tensor([-120.0, -20.0, 0.0, 45.0], dtype=torch.float64)
    gamma = directional_light(elev, azim, torch.tensor([0.2, 0.35, 0.5, 0.8]), 0.05)
    assert gamma.shape == (4, 27) and gamma.dtype == torch.float64
    got_e, got_a = light_angles_deg(gamma)
    assert torch.allclose(got_e, elev, atol=1e-9) and torch.allclose(got_a, azim, atol=1e-9)
    g = gamma.reshape(4, 3, 9)
    assert torch.equal(g[:, :, 0], torch.full((4, 3), 0.05, dtype=torch.float64))
    assert torch.equal(g[:, :, 4:], torch.zeros(4, 3, 5, dtype=torch.float64))
    normals = _fibonacci_sphere(100_000)
    basis = sh_basis(normals)                                     # [M, 9]
    irr = basis[:, 1:4] @ g[:, 0, 1:4].T                          # band-1 irradiance [M, 4]
    dc = (INIT_AMBIENT + 0.05) * basis[0, 0]
    assert torch.allclose(irr.max(0).values / dc, torch.tensor([0.2, 0.35, 0.5, 0.8], dtype=torch.float64),
                          rtol=1e-3)


def test_light_direction_refuses_bad_gamma():
    with pytest.raises(ValueError, match=r"\[\.\.\., 27\]"):
        light_direction(torch.zeros(4, 26))
    with pytest.raises(ValueError, match="no first-order"):
        light_direction(torch.zeros(2, 27))


class _Cells(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self._in = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._in = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.rows[-1].append(self._in)
            self._in = None

    def handle_data(self, data):
        if self._in is not None:
            self._in += data


def test_table_renders_html_and_text():
    rows = [{"name": "<b>a&b</b>", "n": 3, "x": 0.123456, "ok": True},
            {"name": "c", "n": 12, "x": float("nan")}]
    t = viz.table(rows, ["name", "x", "n", "ok"])
    parser = _Cells()
    parser.feed(t._repr_html_())
    assert parser.rows == [["name", "x", "n", "ok"], ["<b>a&b</b>", "0.1235", "3", "yes"], ["c", "–", "12", ""]]
    assert "<b>" not in t.html()          # escaped, not markup
    lines = str(t).splitlines()
    assert lines[0].split() == ["name", "x", "n", "ok"]
    assert lines[1].split() == ["<b>a&b</b>", "0.1235", "3", "yes"]
    # numbers are right-aligned: the ends of "n", "3" and "12" line up
    assert lines[0].index(" n ") + 2 == lines[1].index(" 3 ") + 2 == lines[2].rindex("12") + 2
    assert [r.split() for r in str(viz.table(rows, floatfmt="{:.1f}")).splitlines()[1:]] == \
        [["<b>a&b</b>", "3", "0.1", "yes"], ["c", "12", "–"]]
    assert str(viz.table([])) == ""


def test_landmark_panel_marks_the_landmark_pixels():
    images = -torch.ones(2, 3, 8, 8)
    lms = torch.tensor([[[2.0, 5.0], [40.0, 1.0]], [[0.0, 0.0], [7.0, 7.0]]])   # (40, 1) is outside: skipped
    panel = landmark_panel(images, lms, color=(1.0, -1.0, -1.0))
    assert panel.shape == (2, 3, 8 * PANEL_ZOOM, 8 * PANEL_ZOOM) and torch.equal(images, -torch.ones(2, 3, 8, 8))
    red = (panel[:, 0] > 0) & (panel[:, 1] < 0)
    # A 3 x 3 dot centred on the zoomed landmark: pixel centre x maps to (x + 0.5) * ZOOM - 0.5, clipped at borders.
    expected = torch.zeros_like(red)
    for b, points in enumerate(([(2, 5)], [(0, 0), (7, 7)])):
        for x, y in points:
            cx, cy = round((x + 0.5) * PANEL_ZOOM - 0.5), round((y + 0.5) * PANEL_ZOOM - 0.5)
            expected[b, max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2] = True
    assert torch.equal(red, expected)
    with pytest.raises(ValueError, match="landmarks"):
        landmark_panel(images, lms[0])


def test_reconstruction_rows_blend_the_render_where_the_face_is():
    from cddfm3d.face3d.render import render
    from cddfm3d.world import mini_model, sample_coeffs

    fm = mini_model()
    coeffs = sample_coeffs(2, seed=5)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    rec = reconstruction_rows(images, coeffs, fm)
    ref, mask = render(fm(coeffs, image_size=32), size=32, supersample=2)
    assert torch.allclose(rec["render"], ref * 2 - 1) and torch.equal(rec["mask"], mask)
    m = mask.expand_as(images)
    outside, inside = m == 0, m == 1
    assert outside.any() and inside.any()
    assert torch.equal(rec["overlay"][outside], images[outside])
    assert torch.allclose(rec["overlay"][inside], (0.4 * images + 0.6 * rec["render"])[inside], atol=1e-6)
    assert torch.allclose(rec["landmarks"], fm(coeffs, image_size=32).landmarks)


def test_interactive_threads(monkeypatch):
    monkeypatch.setattr(config, "cpu_count", lambda: 2)
    assert config.interactive_threads() == 1
    monkeypatch.setattr(config, "cpu_count", lambda: 16)
    monkeypatch.setattr(config.os, "getloadavg", lambda: (15.5, 0.0, 0.0))
    assert config.interactive_threads() == 1
    monkeypatch.setattr(config.os, "getloadavg", lambda: (4.0, 0.0, 0.0))
    monkeypatch.setattr(config.torch, "get_num_threads", lambda: 8)
    assert config.interactive_threads() == 8       # 12 idle cores, capped at torch's count
    monkeypatch.setattr(config.os, "getloadavg", lambda: (10.2, 0.0, 0.0))
    assert config.interactive_threads() == 5


def test_device_of_reads_parameters_then_buffers():
    """config.device_of: the first parameter's device, else the first buffer's, else the CPU (the meta device
    stands in for an accelerator: a helper that always answered "cpu" fails)."""
    assert config.device_of(torch.nn.Linear(2, 2, device="meta")) == torch.device("meta")
    buffers_only = torch.nn.Module()
    buffers_only.register_buffer("w_avg", torch.zeros(3, device="meta"))
    assert config.device_of(buffers_only) == torch.device("meta")
    assert config.device_of(torch.nn.ReLU()) == torch.device("cpu")


def test_num_threads_restores_and_setup_notebook_chooses(monkeypatch):
    before = torch.get_num_threads()
    try:
        with config.num_threads(3):
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == before
        with pytest.raises(ValueError, match="positive int"):
            with config.num_threads(0):
                pass
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.delenv("PLOTLY_RENDERER", raising=False)
        monkeypatch.setattr(config, "cpu_count", lambda: 2)
        config.setup_notebook(0)
        assert torch.get_num_threads() == 1
        import plotly.io as pio

        assert pio.renderers.default == config.PLOTLY_RENDERER == "plotly_mimetype+notebook"
        monkeypatch.setenv("OMP_NUM_THREADS", "2")     # an explicit choice is kept
        torch.set_num_threads(2)
        config.setup_notebook(0)
        assert torch.get_num_threads() == 2
        config.setup_notebook(0, threads=3)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
def test_plotly_figure_survives_html_export(tmp_path, monkeypatch):
    """Executed in a kernel and exported by nbconvert: the notebook's renderer keeps the figure (div + script and
    plotly.js embedded, no network) and the mimetype bundle; the mimetype renderer alone loses it."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter
    from plotly.offline import get_plotlyjs_version

    monkeypatch.delenv("PLOTLY_RENDERER", raising=False)
    nb = nbformat.v4.new_notebook()
    figure = "go.Figure(go.Scatter3d(x=[0, 1], y=[0, 1], z=[0, 2], name='{}'))"
    nb.cells = [nbformat.v4.new_code_cell("import cddfm3d\nimport plotly.graph_objects as go\n"
                                          "cddfm3d.setup_notebook(0)"),
                nbformat.v4.new_code_cell(figure.format("mimetype-only") + ".show(renderer='plotly_mimetype')"),
                nbformat.v4.new_code_cell(figure.format("default") + ".show()")]
    NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    mimetype_only, default = nb.cells[1].outputs, nb.cells[2].outputs
    assert [set(o.get("data", {})) for o in mimetype_only] == [{"application/vnd.plotly.v1+json"}]
    assert any("application/vnd.plotly.v1+json" in o.get("data", {}) for o in default)   # what nbval stores
    page, _ = HTMLExporter().from_notebook_node(nb)
    assert page.count('class="plotly-graph-div"') == 1 and page.count("Plotly.newPlot(") >= 1
    assert '"default"' in page and '"mimetype-only"' not in page
    assert f"plotly.js v{get_plotlyjs_version()}" in page                # embedded, not fetched
    assert "<script src=\"https://cdn.plot.ly" not in page


def _setup_cells(notebook: str, world: str) -> dict:
    """Run the parameters and setup cells of a paired notebook script in-process with ``WORLD = world``."""
    import jupytext

    from tests.test_notebooks_pairs import ROOT

    nb = jupytext.read(ROOT / "notebooks" / f"{notebook}.py")
    code = [c.source for c in nb.cells if c.cell_type == "code"][:2]
    assert 'WORLD = "mini"' in code[0]
    namespace = {}
    before = torch.get_num_threads()
    try:
        exec(code[0].replace('WORLD = "mini"', f"WORLD = {world!r}"), namespace)
        exec(code[1], namespace)
    finally:
        torch.set_num_threads(before)
    return namespace


def test_notebook_02_honours_world(tmp_path, monkeypatch):
    import numpy as np

    from cddfm3d.face3d.morphable import SLICES
    from tests.test_face3d_model import write_front_mat

    path = tmp_path / "BFM_model_front.mat"
    write_front_mat(path, np.random.default_rng(0))
    monkeypatch.setenv("CDDFM3D_BFM", str(path))
    monkeypatch.setenv("CDDFM3D_DEVICE", "cpu")
    real = _setup_cells("02_3dmm_and_rendering", "real")
    assert real["fm"].n_vertices == 49 and not real["NAMED"]       # the configured file, not MiniFace
    c = real["variation"]("exp 1", 2.0)
    expected = torch.zeros(257)
    expected[SLICES["exp"].start + 1] = 2.0
    assert torch.equal(c.cpu(), expected)
    mini = _setup_cells("02_3dmm_and_rendering", "mini")
    assert mini["NAMED"] and mini["fm"].n_vertices > 1000
    assert torch.equal(mini["variation"]("smile", 1.5), mini["fm"].direction("smile", 1.5))
    with pytest.raises(ValueError, match="WORLD"):
        _setup_cells("02_3dmm_and_rendering", "moon")


def test_generator_latency_runs_on_the_requested_threads():
    from cddfm3d.world.quality import generator_latency_ms
    from tests.test_stylegan2_generator import small_generator

    G = small_generator()
    seen = []
    G.register_forward_hook(lambda *_: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    generator_latency_ms(G, repeats=3, warmup=1, threads=2)
    assert seen == [2] * 4 and torch.get_num_threads() == before   # the value: test_world_quality
    seen.clear()
    generator_latency_ms(G, repeats=2, warmup=0)
    assert seen == [before] * 2
