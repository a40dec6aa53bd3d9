"""Package structure: lazy top-level imports, `from cddfm3d import *`, and no import loops between modules."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import cddfm3d

PACKAGE = Path(cddfm3d.__file__).parent


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (nothing of this test process imported) and return its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _public_submodules() -> set[str]:
    """Names of the modules and subpackages next to cddfm3d/__init__.py, from the file system."""
    names = {p.stem for p in PACKAGE.glob("*.py")}
    names |= {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    return {n for n in names if not n.startswith("_")}


def test_import_star_resolves_every_advertised_name():
    out = json.loads(_python(
        "import json, sys\n"
        "from cddfm3d import *\n"
        "import cddfm3d\n"
        "missing = [n for n in cddfm3d.__all__ if n not in globals()]\n"
        "print(json.dumps({'all': cddfm3d.__all__, 'missing': missing,\n"
        "                  'loaded': sorted(m for m in sys.modules if m.startswith('cddfm3d.'))}))\n"))
    assert out["missing"] == []
    # __all__ advertises exactly the helpers and the submodules that exist (nothing made up, nothing left out).
    assert set(out["all"]) == {"device", "fast_mode", "setup_notebook", "__version__"} | _public_submodules()
    assert {"stylegan2", "face3d", "world", "stylespace", "editing", "ui", "adapt"} <= set(out["all"])


def test_import_is_lazy():
    loaded = json.loads(_python(
        "import json, sys\nimport cddfm3d\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('cddfm3d.'))))\n"))
    assert loaded == ["cddfm3d.config"]
    # and attribute access imports on demand; unknown names are an AttributeError naming them
    assert cddfm3d.world.__name__ == "cddfm3d.world"
    with pytest.raises(AttributeError, match="no attribute 'pie'"):
        cddfm3d.pie  # noqa: B018


# ------------------------------------------------------------------------------------------------ import graph
def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def import_graph() -> dict[str, set[str]]:
    """module -> package modules it imports anywhere (module level or inside functions), except under
    ``if TYPE_CHECKING:``. ``from . import x`` counts as importing ``x``; ``from .m import f`` as importing ``m``."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = set()
        stack = [ast.parse(path.read_text(), str(path))]
        while stack:
            node = stack.pop()
            if _is_type_checking_block(node):
                stack.extend(node.orelse)
                continue
            stack.extend(ast.iter_child_nodes(node))
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in modules]
                deps.update(subs or ([target] if target in modules else []))
            elif isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in modules)
        deps.discard(name)
        graph[name] = deps
    return graph


def test_import_graph_sees_the_imports():
    # The checker itself: it must find lazy (function-level) imports and relative submodule imports.
    g = import_graph()
    assert "cddfm3d.face3d.miniface" in g["cddfm3d.face3d.morphable"]      # inside MorphableModel.mini()
    assert "cddfm3d.face3d.triton_raster" in g["cddfm3d.face3d.raster"]    # `from . import triton_raster`
    assert "cddfm3d.face3d.visibility" in g["cddfm3d.face3d.triton_raster"]


def test_no_two_package_modules_import_each_other():
    g = import_graph()
    loops = sorted((a, b) for a in g for b in g[a] if a < b and a in g.get(b, ()))
    assert loops == []


FACE3D_MODULES = sorted(p.stem for p in (PACKAGE / "face3d").glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("order", ["forward", "reverse"])
def test_each_face3d_module_imports_alone(order):
    # Each module is imported first, with nothing of the package loaded and without running the package
    # __init__ files (they would fix one import order for everything): bare package objects stand in for
    # cddfm3d and cddfm3d.face3d. A module that needs a half-initialised partner fails here. One fresh
    # interpreter per order; sys.modules is cleared of cddfm3d between modules.
    names = FACE3D_MODULES if order == "forward" else FACE3D_MODULES[::-1]
    out = _python(
        "import importlib, sys, types\n"
        f"root = {str(PACKAGE)!r}\n"
        f"for name in {names!r}:\n"
        "    for m in [m for m in sys.modules if m == 'cddfm3d' or m.startswith('cddfm3d.')]:\n"
        "        del sys.modules[m]\n"
        "    for pkg, path in (('cddfm3d', root), ('cddfm3d.face3d', root + '/face3d')):\n"
        "        stub = types.ModuleType(pkg)\n"
        "        stub.__path__ = [path]\n"
        "        sys.modules[pkg] = stub\n"
        "    importlib.import_module('cddfm3d.face3d.' + name)\n"
        "    print(name)\n")
    assert out.split() == names
