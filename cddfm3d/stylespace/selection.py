"""Attribute-adaptive layer selection: from a response matrix to the reduced StyleSpace S^i of each attribute, the
paper's hard-coded FFHQ-1024 sets mapped to any generator, the overlap of two choices, and the layer-set file.

The rule (:func:`select_layers`)
================================
For attribute i with responses r_l >= 0 over the candidate layers l (negative values count as 0):

1. shares q_l = r_l / sum_l r_l (so the rule does not depend on the matrix's units);
2. order the layers by share, largest first; equal shares keep the lower layer index first (deterministic);
3. S^i = the shortest prefix of that order whose summed share reaches ``share`` (default 0.8), at least one layer.

Because the prefix of the sorted order holds the largest possible sum for its length, S^i is a smallest set of
layers holding ``share`` of the attribute's response, and among the smallest sets one with the largest sum. An
all-zero column has no information: :func:`select_layers` raises ``ValueError`` naming the attribute. A row with a
NaN or Inf (a layer the response did not measure: ``layer_response(layers=[...])`` leaves the others' rows NaN) is
not a candidate.

Layer-set file (JSON, :func:`save_layer_sets` / :func:`load_layer_sets`)
========================================================================
::

    {"format": "cddfm3d.layer_sets", "version": 1,
     "sets": {"shape": [0, 2], "expression": [...], "albedo": [...], "pose": [...], "light": [...]},
     "layers": ["b4.conv1", "b4.torgb", ...],          # names of G.style_layers, in order
     "metadata": {...}}                                 # rule, share, generator sha256, response matrices (NaN:
                                                        # null), ...

Each set is a sorted list of distinct int indices into ``G.style_layers``. The asset kind
``"stylespace.LayerSets"`` loads such a file as ``dict[str, list[int]]`` (all five attributes, in
:data:`cddfm3d.editing.ATTRIBUTES` order).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..face3d.measures import ATTRIBUTES
from ..serialization import atomic_write, check_json_header

FORMAT = "cddfm3d.layer_sets"
VERSION = 1
DEFAULT_SHARE = 0.8

# The 26 StyleSpace layers of a 1024-px StyleGAN2 (tRGB included), in the official order: 4x4 conv, 4x4 tRGB,
# then per block up-conv, conv, tRGB.
FFHQ1024_LAYER_NAMES: tuple[str, ...] = ("b4.conv1", "b4.torgb") + tuple(
    f"b{2 ** k}.{part}" for k in range(3, 11) for part in ("conv0", "conv1", "torgb"))

# The sets the official code writes (cddfm3d_method.md section 4), indices into FFHQ1024_LAYER_NAMES.
PAPER_LAYER_SETS_1024: dict[str, tuple[int, ...]] = {
    "shape": (0, 2, 3, 5),
    "expression": (0, 2, 3, 5, 6, 8, 9),
    "albedo": (8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23, 24),
    "pose": (0, 2, 3, 5),
    "light": (5, 8, 11, 12, 14),
}


# ============================================================================================== the rule
def select_layers(response, share: float = DEFAULT_SHARE, attributes: Sequence[str] = ATTRIBUTES,
                  candidates: Iterable[int] | None = None) -> dict[str, list[int]]:
    """The reduced StyleSpace S^i of every attribute by the rule of the module docstring.

    Args:
        response: [L, A] responses (tensor, array or nested lists; float64 is used), row l = style layer l,
            column a = ``attributes[a]``; units irrelevant (each column is turned into shares). A row with any
            NaN or Inf (an unmeasured layer) is not a candidate.
        share: the share of each attribute's total response the set must hold, in (0, 1].
        attributes: the column names, default :data:`ATTRIBUTES`.
        candidates: layer indices the sets may use (e.g. without tRGB layers); default every row. Of these, the
            rows with non-finite values are dropped.

    Returns:
        {attribute: sorted list of layer indices}, at least one layer each.

    Raises:
        ValueError: ``response`` not a 2-D matrix with ``len(attributes)`` columns; ``share`` outside (0, 1]; a
            candidate out of range; no candidate with finite responses; an attribute whose column is 0 on every
            candidate.
    """
    r = torch.as_tensor(response, dtype=torch.float64)
    if r.ndim != 2 or r.shape[1] != len(attributes) or r.shape[0] == 0:
        raise ValueError(f"select_layers: response must be [layers >= 1, {len(attributes)}] (one column per "
                         f"attribute {tuple(attributes)}), found {tuple(r.shape)}")
    if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
        raise ValueError(f"select_layers: share must be a number in (0, 1], found {share!r}")
    n_layers = r.shape[0]
    cand = list(range(n_layers)) if candidates is None else sorted({int(c) for c in candidates})
    if not cand:
        raise ValueError("select_layers: no candidate layers")
    bad = [c for c in cand if not 0 <= c < n_layers]
    if bad:
        raise ValueError(f"select_layers: candidate layers {bad} out of range [0, {n_layers})")
    finite = torch.isfinite(r).all(1).tolist()
    if not any(finite[c] for c in cand):
        raise ValueError(f"select_layers: every candidate layer {cand} has NaN/Inf responses (not measured); "
                         f"nothing to select from")
    cand = [c for c in cand if finite[c]]
    out = {}
    for a, name in enumerate(attributes):
        col = r[cand, a].clamp_min(0)
        total = float(col.sum())
        if total <= 0:
            raise ValueError(f"select_layers: attribute {name!r} has no positive response on the candidate "
                             f"layers {cand}; nothing to select from")
        q = (col / total).tolist()
        order = sorted(range(len(cand)), key=lambda k: (-q[k], cand[k]))
        chosen, acc = [], 0.0
        for k in order:
            chosen.append(cand[k])
            acc += q[k]
            if acc >= share - 1e-12:
                break
        out[name] = sorted(chosen)
    return out


def layer_set_report(responses: Mapping[str, Any], layer_names: Sequence[str], primary: str,
                     share: float = DEFAULT_SHARE, candidates: Iterable[int] | None = None
                     ) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """The sets of one response matrix and the record that goes with them into a layer-set file.

    Args:
        responses: {method: response}, each a :class:`~cddfm3d.stylespace.response.LayerResponse` (or anything
            with ``matrix`` [L, 5] and ``as_dict()``), e.g. {"recon": ..., "rig": ...}.
        layer_names: the generator's style-layer names (L of them).
        primary: the method whose sets are returned (a key of ``responses``).
        share, candidates: as :func:`select_layers`.

    Returns:
        (sets of ``primary``, metadata): metadata holds the rule, ``share``, the candidates, every method's sets
        and response (``as_dict()``), the paper's sets mapped to these layers with the dropped layers, and the
        Jaccard overlap of every method's sets with the paper's (and of the methods with each other).

    Raises:
        ValueError: ``primary`` not in ``responses``, a matrix that is not [L, 5], or as :func:`select_layers`.
    """
    if primary not in responses:
        raise ValueError(f"layer_set_report: primary method {primary!r} not among {sorted(responses)}")
    cand = None if candidates is None else sorted({int(c) for c in candidates})
    by_method, dumps = {}, {}
    for method, resp in responses.items():
        m = torch.as_tensor(resp.matrix, dtype=torch.float64)
        if m.shape != (len(layer_names), len(ATTRIBUTES)):
            raise ValueError(f"layer_set_report: {method} matrix is {tuple(m.shape)}, expected "
                             f"({len(layer_names)}, {len(ATTRIBUTES)})")
        by_method[method] = select_layers(m, share, candidates=cand)
        dumps[method] = resp.as_dict()
    paper, dropped = paper_layer_sets(layer_names)
    overlap = {f"{m}_vs_paper": jaccard(s, paper) for m, s in by_method.items()}
    methods = sorted(by_method)
    for i, a in enumerate(methods):
        for b in methods[i + 1:]:
            overlap[f"{a}_vs_{b}"] = jaccard(by_method[a], by_method[b])
    meta = {"rule": "smallest set of layers holding `share` of the attribute's response (select_layers)",
            "share": share, "candidates": cand if cand is not None else "all", "primary": primary,
            "sets_by_method": by_method, "responses": dumps, "paper_sets": paper, "paper_dropped": dropped,
            "jaccard": overlap}
    return by_method[primary], meta


# ============================================================================================ paper sets
def paper_layer_sets(layer_names: Sequence[str]) -> tuple[dict[str, list[int]], dict[str, list[str]]]:
    """The paper's FFHQ-1024 sets (:data:`PAPER_LAYER_SETS_1024`) mapped to a generator's style layers by name.

    A 1024-px layer ``b{res}.{conv0,conv1,torgb}`` maps to the generator's layer of the same name; layers above
    the generator's resolution have no counterpart and are reported as dropped (no relative-resolution guessing:
    a 16 px up-conv stays a 16 px up-conv).

    Args:
        layer_names: the generator's style-layer names in order (``[m.name for m in G.style_layers]``).

    Returns:
        (sets, dropped): {attribute: sorted indices into ``layer_names``} and {attribute: names of the 1024-px
        layers without a counterpart}. A set can be empty when every layer of it is dropped.

    Raises:
        ValueError: a name occurs twice in ``layer_names``.
    """
    index = {name: i for i, name in enumerate(layer_names)}
    if len(index) != len(layer_names):
        raise ValueError(f"paper_layer_sets: duplicate layer names in {list(layer_names)}")
    sets, dropped = {}, {}
    for attr in ATTRIBUTES:
        names = [FFHQ1024_LAYER_NAMES[k] for k in PAPER_LAYER_SETS_1024[attr]]
        sets[attr] = sorted(index[n] for n in names if n in index)
        dropped[attr] = [n for n in names if n not in index]
    return sets, dropped


def jaccard(a: Mapping[str, Iterable[int]], b: Mapping[str, Iterable[int]]) -> dict[str, float]:
    """Overlap |A ∩ B| / |A ∪ B| of two layer-set dicts, per attribute present in both (1.0 when both are empty).
    Raises ``ValueError`` when they share no attribute."""
    common = [k for k in a if k in b]
    if not common:
        raise ValueError(f"jaccard: the two set dicts share no attribute ({sorted(a)} vs {sorted(b)})")
    out = {}
    for k in common:
        x, y = set(a[k]), set(b[k])
        out[k] = 1.0 if not x | y else len(x & y) / len(x | y)
    return out


# ============================================================================================== file I/O
class LayerSetsError(ValueError):
    """A layer-set file that is not what :func:`save_layer_sets` writes; the message names the file and field."""


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: tensors and numpy values become (nested) lists or numbers, and a non-finite
    float (NaN: "not estimated", e.g. the rig method's ``stderr``; Inf) becomes ``None`` (JSON ``null``)."""
    if hasattr(value, "tolist") and not isinstance(value, str | bytes):   # tensors, numpy arrays and scalars
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def save_layer_sets(path, sets: Mapping[str, Iterable[int]], layer_names: Sequence[str],
                    metadata: Mapping[str, Any] | None = None) -> Path:
    """Write ``sets`` (validated as :func:`load_layer_sets` would) with the generator's ``layer_names`` and
    ``metadata`` (tensors and arrays become nested lists, NaN and Inf become ``null``; e.g. rule, share, generator
    sha256, response matrices) to ``path`` atomically. Returns the path. Raises :class:`LayerSetsError` for sets
    that would not load."""
    path = Path(path)
    doc = {"format": FORMAT, "version": VERSION, "sets": {k: sorted(int(i) for i in v) for k, v in sets.items()},
           "layers": list(layer_names), "metadata": _jsonable(dict(metadata or {}))}
    _validate(doc, f"save_layer_sets({path})")
    text = json.dumps(doc, indent=1, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return path


def read_layer_sets(path) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """(sets, document) of a layer-set file: the validated sets and the whole parsed JSON (``layers``,
    ``metadata``). Raises ``FileNotFoundError`` or :class:`LayerSetsError` naming the file and field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"layer sets: {path} does not exist")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LayerSetsError(f"{path}: not valid JSON ({e})") from e
    return _validate(doc, str(path)), doc


def load_layer_sets(path, device=None) -> dict[str, list[int]]:
    """Loader of asset kind ``"stylespace.LayerSets"``: {attribute: sorted layer indices}, the five attributes in
    :data:`ATTRIBUTES` order (``device`` is ignored). Errors as :func:`read_layer_sets`."""
    return read_layer_sets(path)[0]


def _validate(doc: Any, where: str) -> dict[str, list[int]]:
    check_json_header(doc, where, FORMAT, VERSION, LayerSetsError)
    layers = doc.get("layers")
    if not isinstance(layers, list) or not layers or not all(isinstance(n, str) for n in layers):
        raise LayerSetsError(f"{where}: field 'layers' must be a non-empty list of layer names, found {layers!r}")
    sets = doc.get("sets")
    if not isinstance(sets, dict):
        raise LayerSetsError(f"{where}: field 'sets' must be an object {{attribute: [layer, ...]}}, found "
                             f"{type(sets).__name__}")
    missing = [a for a in ATTRIBUTES if a not in sets]
    unknown = sorted(k for k in sets if k not in ATTRIBUTES)
    if missing or unknown:
        raise LayerSetsError(f"{where}: field 'sets' must have exactly the attributes {list(ATTRIBUTES)}; missing "
                             f"{missing}, unknown {unknown}")
    if "metadata" in doc and not isinstance(doc["metadata"], dict):
        raise LayerSetsError(f"{where}: field 'metadata' must be an object, found {type(doc['metadata']).__name__}")
    out = {}
    for a in ATTRIBUTES:
        v = sets[a]
        if not isinstance(v, list) or not v or not all(isinstance(i, int) and not isinstance(i, bool) for i in v):
            raise LayerSetsError(f"{where}: sets.{a} must be a non-empty list of int layer indices, found {v!r}")
        if v != sorted(set(v)):
            raise LayerSetsError(f"{where}: sets.{a} must be sorted and without repeats, found {v}")
        bad = [i for i in v if not 0 <= i < len(layers)]
        if bad:
            raise LayerSetsError(f"{where}: sets.{a} has layer indices {bad} out of range [0, {len(layers)}) "
                                 f"(the file lists {len(layers)} style layers)")
        out[a] = list(v)
    return out


def check_layer_names(file_layers: Sequence[str], layer_names: Sequence[str], where: str = "layer sets") -> None:
    """Check that sets written for the style layers ``file_layers`` (a file's ``layers``) apply to a generator whose
    layers are ``layer_names``; ``ValueError`` naming the count and the first layer that differs otherwise."""
    if list(layer_names) == list(file_layers):
        return
    n = min(len(layer_names), len(file_layers))
    k = next((i for i in range(n) if layer_names[i] != file_layers[i]), n)
    raise ValueError(f"{where}: written for {len(file_layers)} style layers, the generator has {len(layer_names)}; "
                     f"first difference at index {k}: {file_layers[k] if k < len(file_layers) else None!r} in the "
                     f"file vs {layer_names[k] if k < len(layer_names) else None!r} in the generator")
