"""A built wheel (what ``pip install .`` installs) carries the code and the shipped assets, and an installed copy
finds and verifies them without the repository: pyproject.toml maps ``assets/`` to the data package
``cddfm3d._shipped``, and ``cddfm3d.assets.assets_dir()`` falls back to it outside a source checkout."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

import cddfm3d
from cddfm3d.face3d.recon import ReconNet

pytestmark = pytest.mark.slow

REPO = Path(cddfm3d.__file__).resolve().parent.parent
SHIPPED = "cddfm3d/_shipped"


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the source (the repository's own tree is left without build/ or egg-info)."""
    src = tmp_path_factory.mktemp("src")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "*.tmp")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    for name in ("cddfm3d", "assets"):
        shutil.copytree(REPO / name, src / name, ignore=skip)
    dist = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "-q", "-w", str(dist), str(src)])
    (found,) = dist.glob("cddfm3d-*.whl")
    return found


def test_wheel_carries_all_code_and_the_shipped_assets(wheel):
    repo_manifest = (REPO / "assets" / "MANIFEST.json").read_bytes()
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert z.read(f"{SHIPPED}/MANIFEST.json") == repo_manifest
        entries = json.loads(repo_manifest)["assets"]
        assert {"mini/generator", "mini/recon"} <= set(entries)
        for name, e in entries.items():
            data = z.read(f"{SHIPPED}/{e['file']}")
            assert len(data) == e["size"] and hashlib.sha256(data).hexdigest() == e["sha256"], name
    # every module of the source tree is in the wheel (pyproject.toml lists the packages explicitly)
    modules = {p.relative_to(REPO).as_posix() for p in (REPO / "cddfm3d").rglob("*.py") if "__pycache__" not in p.parts}
    assert modules and modules <= names, sorted(modules - names)
    shipped = {n for n in names if n.startswith(SHIPPED + "/")}
    assert shipped == {f"{SHIPPED}/MANIFEST.json"} | {f"{SHIPPED}/{e['file']}" for e in entries.values()}
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"cddfm3d"}


INSTALLED_CHECK = """
import json, os, sys
from pathlib import Path
import torch
import cddfm3d
from cddfm3d import assets
from cddfm3d.assets import integrity
site = Path(sys.argv[1]).resolve()
assert Path(cddfm3d.__file__).resolve().is_relative_to(site), cddfm3d.__file__
folder = assets.assets_dir()
net, G = assets.load("mini/recon"), assets.load("mini/generator")
hashed = sorted(Path(key[0]).relative_to(site).as_posix() for key in integrity._HASHES)
x = torch.rand(2, 3, net.image_size, net.image_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
with torch.no_grad():
    torch.save({"x": x, "coeffs": net(x)}, sys.argv[2])
# the installed copy is verified too: a changed byte is refused
f = assets.path("mini/recon")
data = bytearray(f.read_bytes()); data[-1] ^= 0xFF; f.write_bytes(bytes(data))
st = f.stat(); os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
try:
    assets.load("mini/recon")
    refused = ""
except assets.AssetIntegrityError as e:
    refused = str(e)
print(json.dumps({"folder": str(folder.relative_to(site)), "hashed": hashed, "G": type(G).__name__,
                  "resolution": G.resolution, "refused": refused}))
"""


def test_installed_wheel_loads_and_verifies_shipped_assets(wheel, tmp_path):
    site = tmp_path / "site"
    run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check", "-q",
         "--target", str(site), str(wheel)])
    env = {k: v for k, v in os.environ.items() if k not in ("CDDFM3D_ASSETS", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)  # ahead of the editable install of the repository
    out = run([sys.executable, "-c", INSTALLED_CHECK, str(site), str(tmp_path / "out.pt")], cwd=tmp_path, env=env)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["folder"] == "cddfm3d/_shipped"
    assert found["hashed"] == ["cddfm3d/_shipped/mini/generator.safetensors", "cddfm3d/_shipped/mini/recon.safetensors"]
    assert found["G"] == "Generator" and found["resolution"] == 64
    assert "sha256 mismatch for shipped asset 'mini/recon'" in found["refused"]
    # the installed network computes what the repository's file computes
    result = torch.load(tmp_path / "out.pt", weights_only=True)
    net = ReconNet.load(REPO / "assets" / "mini" / "recon.safetensors").eval()
    with torch.no_grad():
        assert torch.equal(net(result["x"]), result["coeffs"])
