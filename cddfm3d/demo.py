"""The main job on the embedded default (``python -m cddfm3d demo``, ``make demo``).

Writes to ``out/``: generator samples, their reconstructions by the mini ReconNet (render overlay and 68
landmarks), the same identities in the toon domain, single-channel StyleSpace edits, the shipped metrics and
the metrics of this run, as PNG grids plus ``demo.json`` and ``index.html``.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

import torch

from . import assets, viz
from .face3d.viz import landmark_panel, reconstruction_rows
from .images import from_uint8
from .stylegan2 import channel_sensitivity, edit_channel, load_generator, style_stats, top_channels

EDIT_SIGMAS = (-10.0, -5.0, 0.0, 5.0, 10.0)
MAX_SAMPLES = 256   # samples in the grids
MAX_CHANNELS = 32   # edited channels (one row of the edit picture each)


def load_default_networks(device=None, generator: str | None = None):
    """(generator, reconstruction network) of the embedded world, or ``generator`` from a checkpoint path."""
    G = load_generator(generator, device=device).eval() if generator else assets.load("mini/generator", device)
    return G, assets.load("mini/recon", device)


def run_demo(out_dir="out", generator: str | None = None, n_samples: int = 16, n_channels: int = 4, seed: int = 0,
             truncation_psi: float = 0.7, device: str | None = None) -> dict:
    """Write the demo page and its images to ``out_dir``; returns the report (also ``demo.json``).

    ``n_samples`` in [1, MAX_SAMPLES], ``n_channels`` in [1, MAX_CHANNELS] (one picture row each); the output folder
    is created only once the arguments and the networks are checked. Raises ``ValueError`` for other values, a
    generator of another size than the reconstruction network's, or a checkpoint that is not a generator."""
    from .face3d.losses import photometric_loss
    from .world import mini_model
    from .world import render as render_world

    t0 = time.perf_counter()
    for name, value, hi in (("n_samples", n_samples, MAX_SAMPLES), ("n_channels", n_channels, MAX_CHANNELS)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
            raise ValueError(f"run_demo: {name} must be an int in [1, {hi}], found {value!r}")
    dev = torch.device(device or "cpu")
    out = Path(out_dir)
    G, net = load_default_networks(dev, generator)
    if net.image_size != G.resolution:
        raise ValueError(f"the reconstruction network takes {net.image_size} px images, the generator makes "
                         f"{G.resolution} px; pass a generator of the mini world's size")
    out.mkdir(parents=True, exist_ok=True)
    fm = mini_model(dev)
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_samples, G.z_dim, generator=g).to(dev)
    with torch.no_grad():
        ws = G.mapping(z, truncation_psi=truncation_psi)
        samples = G.synthesis(ws, noise="const").clamp(-1, 1)
        coeffs = net(samples)
        rec = reconstruction_rows(samples, coeffs, fm)
        photo = float(photometric_loss((rec["render"] + 1) / 2, (samples + 1) / 2, rec["mask"]))
        toon = render_world(coeffs.cpu(), "toon", G.resolution, seed=seed)
    nrow = min(8, n_samples)
    viz.save_png(viz.grid(samples, nrow=nrow), out / "samples.png")
    viz.save_png(viz.grid(rec["overlay"], nrow=nrow), out / "reconstruction_overlay.png")
    viz.save_png(viz.grid(landmark_panel(samples, rec["landmarks"]), nrow=nrow), out / "landmarks.png")
    viz.save_png(viz.grid(toon, nrow=nrow), out / "toon.png")

    stats = style_stats(G, n=2000, seed=seed)
    sens = channel_sensitivity(G, n=8, probes=2, seed=seed, stats=stats)
    chosen = top_channels(sens, G.style_layers, k=n_channels)
    rows = []
    with torch.no_grad():
        base = G.w_to_styles(ws[:1])
        for layer, channel, _ in chosen:
            for a in EDIT_SIGMAS:
                rows.append(G.synthesis_from_styles(edit_channel(base, layer, channel, a, stats), noise="const"))
    viz.save_png(viz.grid(torch.cat(rows), nrow=len(EDIT_SIGMAS)), out / "stylespace_edits.png")

    method = _method_section(out, dev, seed)

    shipped = {}
    for name in ("mini/generator", "mini/recon"):
        try:
            shipped[name] = assets.entry(name).get("metrics", {})
        except (assets.AssetError, assets.AssetValidationError):
            shipped[name] = {}
    report = dict(
        generator=generator or "mini/generator (shipped)", recon="mini/recon (shipped)", resolution=G.resolution,
        n_samples=n_samples, truncation_psi=truncation_psi, style_layers=len(G.style_layers), style_dim=G.style_dim,
        run_metrics={"photometric_samples": photo},
        shipped_metrics=shipped,
        method=method,
        edit_sigmas=list(EDIT_SIGMAS),
        edited_channels=[dict(layer=li, channel=c, name=G.style_layers[li].name, rms_change_per_sigma=round(s, 5))
                         for li, c, s in chosen],
        seconds=round(time.perf_counter() - t0, 2))
    (out / "demo.json").write_text(json.dumps(report, indent=2))
    (out / "index.html").write_text(_page(report, chosen, G))
    return report


METHOD_FACES = 3       # faces in the attribute-edit picture
METHOD_SOURCES = 16    # fresh sources of this run's evaluation
METRIC_SENTENCES = {
    "completion": "Edit completion: how much of the way from the face to the requested attribute the edited image "
                  "went, read by the reconstruction network from the image (1 = exactly the target, 0 = unchanged; "
                  "goal 0.7).",
    "leakage": "Leakage: how far the other four attributes moved, in units of the distance between two random "
               "faces, averaged over them (0 = untouched; goal 0.15).",
    "identity": "Identity kept: how far the face shape moved when another attribute was edited, in the same units "
                "(0 = the same person).",
    "perfect": "Perfect edit: the same two measures for the world's own render of each face with the attribute set "
               "exactly to the target, read the same way: an estimate of the best an editor can score with this "
               "reconstruction network (its completion falls short of 1, and its leakage exceeds 0, only by the "
               "network's reading errors).",
}


def _method_section(out: Path, dev, seed: int) -> dict | None:
    """The method on the shipped networks (when the assets have the F^i): ``method_edits.png`` (per face, a row of
    edits per attribute and under it the 3DMM renders of the target coefficients) and this run's evaluation on
    fresh faces (swap targets). None when no F^i is shipped."""
    from .editing import FaceEditor, evaluate
    from .editing.evaluation import PERFECT, synthesize
    from .editing.labels import label_images
    from .world import mini_model

    try:
        editor = FaceEditor.load("mini", dev)
    except ValueError:
        return None
    fm = mini_model(dev)
    rows, labels = [], {}
    faces = torch.cat([editor.styles_from_seed(10_000 + seed * 100 + i) for i in range(METHOD_FACES)])
    face_seeds = list(range(METHOD_FACES))
    for a in editor.attributes:
        labels[a], edits = editor.sweep(a)
        series = editor.series(faces, face_seeds, edits)
        with torch.no_grad():
            renders = [reconstruction_rows(from_uint8(series["images"][j]), series["targets"][j], fm)["render"]
                       for j in range(len(edits))]
        rows.append((series["images"], renders))
    cells = []
    for i in range(METHOD_FACES):
        for images, renders in rows:
            cells += [from_uint8(images[j][i]).cpu() for j in range(len(images))]
            cells += [renders[j][i].cpu() for j in range(len(images))]
    ncol = len(rows[0][1])
    viz.save_png(viz.grid(torch.stack(cells), nrow=ncol), out / "method_edits.png")
    sources = torch.cat([editor.styles_from_seed(20_000 + seed * 1000 + i) for i in range(METHOD_SOURCES)])
    recon = assets.load("mini/recon", dev).eval()
    noise_seeds = list(range(METHOD_SOURCES))
    with torch.no_grad():   # the faces' coefficients, for the perfect edit: the reconstruction network's readings
        coeffs, _ = label_images(recon, synthesize(editor.G, sources, noise_seeds), fm)
    report = evaluate(editor.G, editor.T, {"cddfm3d": editor.manipulators}, sources, noise_seeds,
                      {"recon": recon}, targets=("swap",), attributes=editor.attributes, seed=seed, reference=coeffs)
    table = []
    for a in editor.attributes:
        sc, ceiling = report.score("cddfm3d", "recon", "swap", a), report.score(PERFECT, "recon", "swap", a)
        table.append({"attribute": a, "completion": round(sc.completion, 3),
                      "leakage": round(sc.offdiag_leakage, 3),
                      "identity": None if a == "shape" else round(sc.identity, 3),
                      "perfect_completion": round(ceiling.completion, 3),
                      "perfect_leakage": round(ceiling.offdiag_leakage, 3)})
    return {"attributes": editor.attributes, "columns": labels, "faces": METHOD_FACES,
            "n_sources": METHOD_SOURCES, "table": table, "sentences": METRIC_SENTENCES}


def _table(metrics: dict) -> str:
    return viz.table([{"metric": k, "value": v} for k, v in metrics.items()], ["metric", "value"]).html()


def _page(report: dict, chosen, G) -> str:
    px = "style='image-rendering:pixelated;width:100%;max-width:1100px'"
    items = "".join(f"<li>{html.escape(G.style_layers[li].name)} (layer {li}), channel {c}</li>"
                    for li, c, _ in chosen)
    shipped = "".join(f"<h3>{html.escape(k)}</h3>{_table(v)}" for k, v in report["shipped_metrics"].items())
    return (
        "<!doctype html><meta charset='utf-8'><title>cddfm3d demo</title>"
        "<h1>cddfm3d demo: the mini world</h1>"
        f"<p>Generator: {html.escape(report['generator'])} ({report['resolution']} px, {report['style_layers']} "
        f"style layers, {report['style_dim']} StyleSpace dims); reconstruction: {html.escape(report['recon'])}. "
        f"Samples at truncation {report['truncation_psi']}.</p>"
        f"<h2>Generator samples</h2><img src='samples.png' {px}>"
        "<h2>Reconstructions</h2><p>The MiniFace render of each sample's predicted coefficients, blended over it:</p>"
        f"<img src='reconstruction_overlay.png' {px}><p>The 68 projected landmarks of the prediction:</p>"
        f"<img src='landmarks.png' {px}>"
        "<h2>The same identities in the toon domain</h2><p>The predicted coefficients rendered by the toon domain "
        f"(cel shading, outlines, enlarged eyes, cartoon palette):</p><img src='toon.png' {px}>"
        f"<h2>Single-channel StyleSpace edits</h2><p>Rows: the channels with the largest image effect per std; "
        f"columns: {', '.join(f'{a:+g}' for a in report['edit_sigmas'])} std.</p><ul>{items}</ul>"
        "<img src='stylespace_edits.png' style='image-rendering:pixelated;width:60%;max-width:700px'>"
        f"{_method_html(report.get('method'), px)}"
        f"<h2>Metrics of this run</h2>{_table(report['run_metrics'])}"
        f"<h2>Shipped metrics (assets/MANIFEST.json)</h2>{shipped}"
        f"<p>Written in {report['seconds']} s.</p>")


def _method_html(method: dict | None, px: str) -> str:
    if method is None:
        return ("<h2>The method</h2><p>No editing networks are shipped yet (train them with <code>train-f</code> and "
                "ship them with <code>ship-f</code>).</p>")
    cols = "".join(f"<li>{html.escape(a)}: {html.escape(', '.join(c))}</li>" for a, c in method["columns"].items())
    sentences = "".join(f"<li>{html.escape(t)}</li>" for t in method["sentences"].values())
    rows = [{"attribute": r["attribute"], "edit completion": r["completion"], "leakage": r["leakage"],
             "identity kept": "-" if r["identity"] is None else r["identity"],
             "perfect edit: completion": r["perfect_completion"], "perfect edit: leakage": r["perfect_leakage"]}
            for r in method["table"]]
    return (
        "<h2>The method: editing by 3D attributes</h2>"
        f"<p>{method['faces']} generated faces; for each, one row per attribute ("
        f"{html.escape(', '.join(method['attributes']))}) edited by its network F<sup>i</sup> with increasing "
        "offsets, and under each row the 3DMM render of the coefficients the edit was asked to reach. Columns:</p>"
        f"<ul>{cols}</ul><img src='method_edits.png' {px}>"
        f"<h3>This run's evaluation ({method['n_sources']} fresh faces, each attribute swapped with another face's)"
        f"</h3>{viz.table(rows).html()}<ul>{sentences}</ul>")
