"""Embedding files (cddfm3d.adapt.inversion) and ``python -m cddfm3d invert``: the files hold what the embedding
functions returned, re-synthesise to the stored image, and the command's outputs agree with direct calls."""
from __future__ import annotations

import json
import os

import imageio.v3 as iio
import pytest
import torch

from cddfm3d import assets
from cddfm3d.adapt import pie_embed, project
from cddfm3d.adapt.inversion import EmbeddingFileError, load_embedding, save_embedding
from cddfm3d.cli import main
from cddfm3d.images import to_uint8
from cddfm3d.serialization import read_safetensors, save_safetensors
from cddfm3d.ui.image_input import generator_input
from cddfm3d.world import render, sample_coeffs


@pytest.fixture(scope="module")
def G():
    return assets.load("mini/generator").eval()


@pytest.fixture(scope="module")
def render_png(tmp_path_factory):
    x = render(sample_coeffs(1, seed=31), "human", 64, seed=31)
    path = tmp_path_factory.mktemp("inv") / "face.png"
    iio.imwrite(path, to_uint8(x)[0].permute(1, 2, 0).numpy())
    return path


def _resynth(G, r):
    with torch.no_grad():
        return G.synthesis_from_styles(G.unflatten_styles(r.styles), noise=r.noise).clamp(-1, 1)


def test_embedding_file_round_trip(G, render_png, tmp_path):
    x = generator_input(render_png, 64)[0]
    r = project(G, x, space="w+", steps=3, n_stats=200, progress=False)
    f = save_embedding(r, tmp_path / "e.safetensors", "project", generator="mini/generator")
    back = load_embedding(f)
    assert torch.equal(back.styles, r.styles) and torch.equal(back.ws, r.ws) and torch.equal(back.image, r.image)
    assert len(back.noise) == len(r.noise) and all(torch.equal(a, b) for a, b in zip(back.noise, r.noise, strict=True))
    assert back.space == "w+" and back.steps == 3 and back.perceptual == r.perceptual
    torch.testing.assert_close(back.psnr, r.psnr.float())
    torch.testing.assert_close(_resynth(G, back), r.image)     # the file is enough to draw the embedding again


def test_load_embedding_errors(G, render_png, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_embedding(tmp_path / "missing.safetensors")
    other = tmp_path / "gen.safetensors"
    save_safetensors({"w": torch.zeros(2)}, other, {"format": "cddfm3d.generator"})
    with pytest.raises(EmbeddingFileError, match="'format' is 'cddfm3d.generator', expected 'cddfm3d.embedding'"):
        load_embedding(other)
    x = generator_input(render_png, 64)[0]
    f = save_embedding(project(G, x, steps=2, n_stats=100, progress=False), tmp_path / "e.safetensors", "project")
    tensors, meta = read_safetensors(f)
    del tensors["noise.1"]
    save_safetensors(tensors, tmp_path / "cut.safetensors", meta)
    with pytest.raises(EmbeddingFileError, match="'noise.1' is missing"):
        load_embedding(tmp_path / "cut.safetensors")
    with pytest.raises(ValueError, match="method must be one of"):
        save_embedding(project(G, x, steps=1, n_stats=100, progress=False), tmp_path / "x.safetensors", "gan")


def test_invert_command_pie_equals_a_direct_call(G, render_png, tmp_path, capsys):
    assert main(["invert", str(render_png), "--out", str(tmp_path), "--steps", "3", "--quiet", "--device", "cpu"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    e = load_embedding(tmp_path / "face.safetensors")
    x = generator_input(render_png, 64)[0]
    ref = pie_embed(G, x, steps=3, progress=False)
    torch.testing.assert_close(e.styles, ref.styles)
    assert row["method"] == "pie" and row["steps"] == 3 and row["psnr_db"] == pytest.approx(float(ref.psnr[0]),
                                                                                             abs=1e-3)
    pic = iio.imread(tmp_path / "face.png")                    # input | embedding
    assert pic.shape == (64, 128, 3)
    assert (pic[:, :64] == to_uint8(x)[0].permute(1, 2, 0).numpy()).all()
    assert (pic[:, 64:] == to_uint8(e.image)[0].permute(1, 2, 0).numpy()).all()
    assert json.loads((tmp_path / "summary.json").read_text())[0]["embedding"].endswith("face.safetensors")


def test_invert_command_on_a_photograph(photo, photo_data, tmp_path, capsys):
    data = str(photo_data)
    rc = main(["invert", os.path.join(data, "astronaut.png"), "--photo", "--method", "project", "--steps", "2",
               "--out", str(tmp_path), "--quiet"])
    assert rc == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0 < row["dlib_distance"] < 2 and (tmp_path / "astronaut.safetensors").is_file()
    assert row["framing"] == "deep3d"                         # the mini generator: Deep3D's crop
    rc = main(["invert", os.path.join(data, "astronaut.png"), "--photo", "--framing", "ffhq", "--method", "project",
               "--steps", "1", "--out", str(tmp_path / "ffhq"), "--quiet"])
    assert rc == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["framing"] == "ffhq"
    left = iio.imread(tmp_path / "ffhq" / "astronaut.png")[:, :64]
    assert (left == photo.align_photo(os.path.join(data, "astronaut.png"), size=64, framing="ffhq").crop).all()
    rc = main(["invert", os.path.join(data, "chelsea.png"), "--photo", "--out", str(tmp_path / "cat"), "--quiet"])
    assert rc == 2 and "no face found in 'chelsea.png'" in capsys.readouterr().err
    assert not (tmp_path / "cat" / "chelsea.safetensors").exists()


def test_invert_command_refuses_pie_in_another_space(render_png, tmp_path, capsys):
    rc = main(["invert", str(render_png), "--out", str(tmp_path), "--space", "s", "--quiet"])
    assert rc == 2 and "space must be 'w+' for method 'pie'" in capsys.readouterr().err
    assert main(["invert", str(tmp_path / "nope.png"), "--out", str(tmp_path)]) == 2


def test_invert_command_names_misuse_before_any_work(G, render_png, tmp_path, capsys):
    from cddfm3d.stylegan2 import Generator, save_generator

    assert main(["invert", str(tmp_path), "--out", str(tmp_path / "o")]) == 2           # a folder
    assert "is a folder, not a file" in capsys.readouterr().err
    assert main(["invert", str(render_png), "--face", "1", "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "--face only apply to photographs: add --photo" in capsys.readouterr().err
    copy = tmp_path / "b" / render_png.name
    copy.parent.mkdir()
    copy.write_bytes(render_png.read_bytes())
    assert main(["invert", str(render_png), str(copy), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "more than one image named ['face']" in capsys.readouterr().err
    other = tmp_path / "g16.safetensors"                                   # another architecture than the mini G
    save_generator(Generator(resolution=16, z_dim=16, w_dim=16, mapping_layers=2, channels={4: 16, 8: 16, 16: 8}),
                   other)
    assert main(["invert", str(render_png), "--generator", str(other), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "--method pie uses the mini world's T and F^i, which do not fit" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())
