"""Each editable attribute measured in the space where a person sees it (DESIGN.md, "Measures").

Most of the 80/64/80 PCA components of a morphable model barely move the face, so coefficient errors say little
about what an image shows. Every stage (the reconstruction network, the attribute predictor T, the editing
networks F^i) is therefore measured on these features of the coefficients:

=========== ============ =======================================================================================
attribute   coefficients feature (per sample)
=========== ============ =======================================================================================
shape       id  [0:80]   the identity part of the vertex positions, ``id_base @ id``: [N * 3], dm
expression  exp [80:144] the expression part of the vertex positions, ``exp_base @ exp``: [N * 3], dm
albedo      tex [144:224] the per-vertex albedo colour ``(mean_tex + tex_base @ tex) / 255``: [N * 3], RGB 0-1
light       gamma        the SH irradiance (Deep3D's, +0.8 ambient) over :data:`LIGHT_NORMALS` unit normals that
            [227:254]    face the camera, per colour: [M * 3]
pose        angle        the rotation angles (pitch, yaw, roll) in degrees: [3]
            [224:227]
=========== ============ =======================================================================================

On these features: :func:`attribute_distance` (RMS over vertices / normals of the Euclidean difference per vertex,
in the feature's units; degrees per axis for pose) and :func:`explained_variance` (1 - SSE / SST, pooled over
the feature's entries: the share of the variation across faces that a prediction reproduces; 0 is predicting the
average, 1 is exact). :class:`ExplainedVariance` accumulates it over batches (with :class:`Moments`, the one
variance accumulator). :func:`feature_metric` gives each attribute's squared feature distance as a small quadratic
form of its coefficients (the fast form of a training loss in these spaces). :func:`coefficient_scale` is the
per-coefficient spread of a coefficient sample, the unit in which the reconstruction network's coefficient loss and
T's outputs are counted.

How much each single component shows in an image: :func:`component_visibility` (the screen motion in pixels, or
the colour change, of one prior standard deviation of each component, over the vertices :func:`visible_vertices`
finds by z-buffering).
"""
from __future__ import annotations

import math

import torch

from .lighting import shade
from .morphable import SLICES, MorphableModel
from .raster import rasterize

ATTRIBUTES = ("shape", "expression", "albedo", "pose", "light")
ATTRIBUTE_GROUPS = {"shape": "id", "expression": "exp", "albedo": "tex", "pose": "angle", "light": "gamma"}
N_LIGHT_NORMALS = 256
COEFF_STD_FLOOR = 1e-3     # the smallest per-coefficient scale (a constant coefficient is not blown up)


def camera_facing_normals(n: int = N_LIGHT_NORMALS, dtype=torch.float64) -> torch.Tensor:
    """``n`` unit normals [n, 3] spread evenly (a Fibonacci lattice of equal-area cells) over the hemisphere that
    faces the camera (z > 0: x right, y up, z toward the camera, as the model's normals)."""
    k = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1.0 - k / n                                  # uniform in (0, 1]: equal area on the hemisphere
    r = torch.sqrt(1.0 - z * z)
    phi = k * math.pi * (3.0 - math.sqrt(5.0))       # golden angle
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1).to(dtype)


LIGHT_NORMALS = camera_facing_normals()


def attribute_features(model: MorphableModel, coeffs: torch.Tensor, attribute: str) -> torch.Tensor:
    """The features [B, K] of ``attribute`` (see the module docstring) for coefficients [B, 257].

    Raises ``ValueError`` for an unknown attribute or coefficients that are not [B, 257]."""
    if attribute not in ATTRIBUTE_GROUPS:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTES}")
    if coeffs.ndim != 2 or coeffs.shape[1] != 257:
        raise ValueError(f"attribute_features: coefficients must be [B, 257], found {tuple(coeffs.shape)}")
    part = coeffs[:, SLICES[ATTRIBUTE_GROUPS[attribute]]].to(model.mean_shape.dtype)
    if attribute == "shape":
        return part @ model.id_base.T
    if attribute == "expression":
        return part @ model.exp_base.T
    if attribute == "albedo":
        return model.compute_albedo(part).flatten(1)
    if attribute == "pose":
        return torch.rad2deg(part)
    normals = LIGHT_NORMALS.to(part).expand(len(part), -1, -1)                # irradiance = shade of albedo 1
    return shade(torch.ones_like(normals), normals, part).flatten(1)           # [B, M * 3]


def _width(attribute: str) -> int:
    """Entries of the feature that form one point (xyz of a vertex, RGB of a vertex or normal; 1 for pose)."""
    return 1 if attribute == "pose" else 3


def attribute_distance(model: MorphableModel, a: torch.Tensor, b: torch.Tensor, attribute: str) -> torch.Tensor:
    """Distance [B] between coefficients ``a`` and ``b`` [B, 257] in ``attribute``'s space: the RMS over points
    (vertices, normals) of the Euclidean distance of their 3-vectors (dm for shape and expression, RGB 0-1 for
    albedo and light); for pose the RMS over the three angles, in degrees."""
    d = attribute_features(model, a, attribute) - attribute_features(model, b, attribute)
    w = _width(attribute)
    return d.reshape(d.shape[0], -1, w).square().sum(-1).mean(-1).sqrt()


@torch.no_grad()
def feature_metric(model: MorphableModel, attribute: str) -> torch.Tensor:
    """A matrix M [k, k] (float64; k = the attribute's coefficient count: 80 / 64 / 80 / 3 / 27) with

        |f(a) - f(b)|^2 = |(a_g - b_g) @ M|^2

    for the features f of :func:`attribute_features` and the attribute's coefficient group g of any coefficients
    a, b [B, 257]. Every feature here is affine in its group (vertex / albedo bases, SH irradiance over fixed
    normals, degrees), f(c) = f(0) + c_g @ J with J [k, K] (K = N * 3 or M * 3), so the squared distance is the
    quadratic form of the Gram matrix J J^T = V diag(l) V^T, and M = V diag(sqrt(l)). J is read off
    :func:`attribute_features` itself (one probe per coefficient, in the model's dtype) and the factorisation is
    float64. ``c_g @ M`` are the attribute's features up to an isometry and a translation: distances and explained
    variance on them equal those on the full features, at k instead of K entries (21606 for shape). Raises
    ``ValueError`` for an unknown attribute."""
    if attribute not in ATTRIBUTE_GROUPS:
        raise ValueError(f"unknown attribute {attribute!r}; expected one of {ATTRIBUTES}")
    group = SLICES[ATTRIBUTE_GROUPS[attribute]]
    k = group.stop - group.start
    probes = torch.zeros(k + 1, 257, dtype=model.mean_shape.dtype, device=model.mean_shape.device)
    probes[1:, group] = torch.eye(k, dtype=probes.dtype, device=probes.device)
    f = attribute_features(model, probes, attribute).double()
    jac = (f[1:] - f[:1]).cpu()                                          # [k, K]
    evals, evecs = torch.linalg.eigh(jac @ jac.T)
    return evecs * evals.clamp_min(0).sqrt()


def coefficient_scale(coeffs: torch.Tensor, floor: float = COEFF_STD_FLOOR) -> torch.Tensor:
    """Per-coefficient sample standard deviation (ddof 1, computed in float64) of coefficients [N >= 2, 257] (any
    [N, K] works), floored at ``floor``: float32 [K] on the coefficients' device, in their units."""
    return coeffs.double().std(0).clamp_min(floor).float()


class Moments:
    """Count, sum and sum of squares of feature rows, accumulated over batches in float64 (one pass, on the rows'
    device): the one variance accumulator of the package.

    ``update(x)`` with rows [B, K] (the same K every time). ``centred_sumsq()`` [K] = sum_i (x_ik - mean_k)^2,
    computed as sumsq - sum^2 / n and clipped at 0 (rounding can make a constant entry's slightly negative);
    ``variance(ddof)`` [K] = that / (n - ddof); ``total_variance(ddof)`` = sum_k of it, a float. Raises
    ``ValueError`` for rows of another shape and for fewer than ``ddof + 1`` samples."""

    def __init__(self, name: str = "Moments"):
        self.name = name
        self.n = 0
        self.sum: torch.Tensor | None = None
        self.sumsq: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        if x.ndim != 2 or (self.sum is not None and x.shape[1] != self.sum.shape[0]):
            expected = "[B, K]" if self.sum is None else f"[B, {self.sum.shape[0]}]"
            raise ValueError(f"{self.name}: expected rows {expected}, found {tuple(x.shape)}")
        x = x.detach().double()
        self.n += x.shape[0]
        s, sq = x.sum(0), x.square().sum(0)
        self.sum, self.sumsq = (s, sq) if self.sum is None else (self.sum + s, self.sumsq + sq)

    def centred_sumsq(self) -> torch.Tensor:
        if self.n == 0:
            raise ValueError(f"{self.name}: no samples")
        return (self.sumsq - self.sum ** 2 / self.n).clamp_min(0)

    def variance(self, ddof: int = 0) -> torch.Tensor:
        if self.n <= ddof:
            raise ValueError(f"{self.name}: need at least {ddof + 1} samples, found {self.n}")
        return self.centred_sumsq() / (self.n - ddof)

    def total_variance(self, ddof: int = 0) -> float:
        if self.n <= ddof:
            raise ValueError(f"{self.name}: need at least {ddof + 1} samples, found {self.n}")
        return float(self.centred_sumsq().sum()) / (self.n - ddof)


class ExplainedVariance:
    """Explained variance of predicted features, accumulated over batches in float64.

    ``update(pred, true)`` with features [B, K]; ``value()`` = 1 - sum (pred - true)^2 / sum (true - mean(true))^2,
    sums over samples and entries, mean over all samples seen (per entry; :class:`Moments` of the truth). ``nan``
    when the truth does not vary."""

    def __init__(self):
        self.sse = 0.0
        self.truth = Moments("ExplainedVariance")

    @property
    def n(self) -> int:
        return self.truth.n

    def update(self, pred: torch.Tensor, true: torch.Tensor) -> None:
        if pred.shape != true.shape or pred.ndim != 2:
            raise ValueError(f"ExplainedVariance: expected two [B, K] tensors of one shape, found "
                             f"{tuple(pred.shape)} and {tuple(true.shape)}")
        self.sse += float((pred.detach().double() - true.detach().double()).square().sum())
        self.truth.update(true)

    def value(self) -> float:
        sst = float(self.truth.centred_sumsq().sum()) if self.n != 1 else 0.0   # (n = 0 raises: no samples)
        return 1.0 - self.sse / sst if sst > 0 else float("nan")


def explained_variance(pred: torch.Tensor, true: torch.Tensor) -> float:
    """1 - SSE / SST of features [B, K] (see :class:`ExplainedVariance`)."""
    acc = ExplainedVariance()
    acc.update(pred, true)
    return acc.value()


# ------------------------------------------------------------------------------------- component visibility
VISIBILITY_SUPERSAMPLE = 8     # visible_vertices rasterizes at this multiple of the image size
MOTION_GROUPS = ("id", "exp", "angle", "trans")   # observed as screen motion, pixels
COLOUR_GROUPS = ("tex", "gamma")                  # observed as colour change, RGB 0-1
VERTEX_SETS = ("visible", "all")
QUANTITIES = {"screen": "pixels", "albedo": "RGB 0-1", "colour": "RGB 0-1"}
DEFAULT_QUANTITY = {"id": "screen", "exp": "screen", "angle": "screen", "trans": "screen", "tex": "albedo",
                    "gamma": "colour"}


def _check_single_coeffs(model: MorphableModel, coeffs, who: str) -> torch.Tensor:
    """``None`` (the mean face: zeros), [257] or [B, 257] -> [B, 257] in the model's dtype and device."""
    if coeffs is None:
        return model.zeros(1)
    if not isinstance(coeffs, torch.Tensor) or not coeffs.is_floating_point():
        found = coeffs.dtype if isinstance(coeffs, torch.Tensor) else type(coeffs).__name__
        raise TypeError(f"{who}: coeffs must be a float tensor [257] or [B, 257], found {found}")
    c = coeffs[None] if coeffs.ndim == 1 else coeffs
    if c.ndim != 2 or c.shape[1] != 257 or c.shape[0] == 0:
        raise ValueError(f"{who}: coeffs must be [257] or [B >= 1, 257], found {tuple(coeffs.shape)}")
    if not bool(torch.isfinite(c).all()):
        raise ValueError(f"{who}: coeffs contain NaN/Inf")
    return c.to(model.mean_shape.device, model.mean_shape.dtype)


def _check_image_size(image_size, who: str) -> int:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"{who}: image_size must be a positive int (pixels), found {image_size!r}")
    return image_size


def visible_vertices(model: MorphableModel, coeffs: torch.Tensor | None = None, image_size: int = 64,
                     supersample: int = VISIBILITY_SUPERSAMPLE) -> torch.Tensor:
    """Which vertices the camera sees: bool [B, N] (``coeffs`` [B, 257] or [257], default the mean face).

    The whole mesh is projected with the model's camera scaled to ``image_size`` and z-buffered (no back-face
    culling) at ``image_size * supersample`` px; a vertex is visible when it is a corner of a triangle that is
    the nearest one at one or more samples. The fine grid matters: MiniFace's triangles are about half a pixel
    wide at 64 px, so at the image's own size many visible triangles win no sample. Vertices on the border of a
    hidden region count as visible (e.g. the lips' edge against the mouth cavity behind them).

    Raises ``TypeError`` / ``ValueError`` for coefficients that are not a finite float [257] or [B, 257], or an
    ``image_size`` / ``supersample`` that is not a positive int."""
    who = "visible_vertices"
    c = _check_single_coeffs(model, coeffs, who)
    size = _check_image_size(image_size, who)
    if isinstance(supersample, bool) or not isinstance(supersample, int) or supersample < 1:
        raise ValueError(f"{who}: supersample must be a positive int, found {supersample!r}")
    hi = size * supersample
    with torch.no_grad():
        out = model(c, image_size=size, check=False)
        # The same sub-sample placement as render(): output pixel centres on integers, k x k samples inside.
        xy = out.screen[..., :2] * supersample + (supersample - 1) / 2
        frags = rasterize(torch.cat([xy, out.screen[..., 2:]], -1), model.faces, hi, hi)
        b = frags.pix_index // (hi * hi)
        seen = torch.zeros(c.shape[0], model.faces.shape[0], dtype=torch.bool, device=c.device)
        seen[b, frags.pix_face] = True
        vis = torch.zeros(c.shape[0], model.n_vertices, dtype=torch.bool, device=c.device)
        for i in range(c.shape[0]):
            vis[i, model.faces[seen[i]].reshape(-1)] = True
    return vis


def component_visibility(model: MorphableModel, group: str, std, image_size: int = 64,
                         coeffs: torch.Tensor | None = None, vertices: str = "visible",
                         quantity: str | None = None) -> torch.Tensor:
    """How much one prior standard deviation of each component of ``group`` shows in an image.

    For component k of the group (width K) and a face with coefficients c (``coeffs`` [257] or [B, 257]; default
    the mean face, frontal, centred, ambient light), the image quantity q(c) is (``quantity``; by default the one
    the group changes: "screen" for id, exp, angle, trans; "albedo" for tex; "colour" for gamma)

    * ``"screen"``: the 2-D screen position (x, y) of each vertex, pixels, with the model's camera scaled to
      ``image_size`` (:meth:`PinholeCamera.scaled`; 29 px per dm at the face for 64 px);
    * ``"albedo"``: the per-vertex albedo, RGB 0-1 (x 255 for 0-255 units);
    * ``"colour"``: the per-vertex lit colour (albedo x SH irradiance), RGB 0-1: for gamma the light itself, for
      id / exp / angle the shading through the normals (zero under the default ambient-only light: pass ``coeffs``
      with a directional light);

    and the result is the linearised change of one standard deviation, as an RMS over vertices::

        m_k = sqrt( mean_{v in V} | (d q_v / d c_k) * std_k |^2 )

    with |.| the Euclidean norm of the 2-vector (pixels) or RGB 3-vector. The derivative is exact (forward-mode
    autodiff of the model's forward pass); shape and texture enter linearly, and only the perspective division
    bends a finite step: the mean motion of the +1 and -1 std steps agrees with m_k to 1e-4 (relative). V is the
    set of vertices the camera sees at c (``vertices="visible"``, :func:`visible_vertices`: hidden ones, e.g. the
    mouth cavity behind closed lips, cannot show anything), or every vertex (``"all"``). In "screen", depth-only
    motion counts only through its perspective effect; what it changes in shading is measured by "colour".

    Args:
        model: a :class:`MorphableModel` (float32 or float64; the result is float64 either way).
        group: one of ``MOTION_GROUPS`` + ``COLOUR_GROUPS``: "id", "exp", "angle", "trans", "tex", "gamma".
        std: the prior standard deviation of each component: a number, or [K] values >= 0 (e.g.
            ``cddfm3d.world.priors.prior_std()[SLICES[group]]``), in coefficient units (radians for angles, dm for
            translation).
        image_size: pixels; the camera's focal length and centre scale with it.
        coeffs: where to linearise: [257] or [B, 257]; default the mean face (zeros).
        vertices: "visible" or "all".
        quantity: None (the group's own), "screen", "albedo" or "colour".

    Returns:
        float64 [K] (``coeffs`` None or [257]) or [B, K]: pixels for "screen", RGB 0-1 for "albedo" and "colour".

    Raises:
        ValueError: unknown ``group``, ``vertices`` or ``quantity``; ``std`` not a finite number >= 0 or not of
            length K; ``image_size`` not a positive int; ``coeffs`` not [257] / [B, 257] or not finite.
        TypeError: ``coeffs`` not a float tensor.
    """
    who = "component_visibility"
    groups = MOTION_GROUPS + COLOUR_GROUPS
    if group not in groups:
        raise ValueError(f"{who}: group must be one of {groups}, found {group!r}")
    if vertices not in VERTEX_SETS:
        raise ValueError(f"{who}: vertices must be one of {VERTEX_SETS}, found {vertices!r}")
    quantity = DEFAULT_QUANTITY[group] if quantity is None else quantity
    if quantity not in QUANTITIES:
        raise ValueError(f"{who}: quantity must be None or one of {tuple(QUANTITIES)}, found {quantity!r}")
    size = _check_image_size(image_size, who)
    single = coeffs is None or (isinstance(coeffs, torch.Tensor) and coeffs.ndim == 1)
    c = _check_single_coeffs(model, coeffs, who)
    sl = SLICES[group]
    width = sl.stop - sl.start
    try:
        s = torch.as_tensor(std.detach().cpu() if isinstance(std, torch.Tensor) else std, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{who}: std must be a number or {width} numbers, found {type(std).__name__}") from e
    s = s.flatten()
    if s.numel() == 1:
        s = s.expand(width)
    if s.numel() != width:
        raise ValueError(f"{who}: std must be a number or {width} values for group {group!r}, found {s.numel()}")
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError(f"{who}: std must be finite and >= 0, found range [{float(s.min())}, {float(s.max())}]")
    vis = visible_vertices(model, c, size) if vertices == "visible" else None

    def observed(part: torch.Tensor, row: torch.Tensor) -> torch.Tensor:
        full = torch.cat([row[:, :sl.start], part, row[:, sl.stop:]], 1)
        out = model(full, image_size=size, check=False)
        if quantity == "albedo":
            return out.albedo[0]
        if quantity == "colour":
            return out.colors[0]
        return out.screen[0, :, :2]

    tangents = torch.diag(s).to(c)[:, None, :]                                  # [K, 1, K]: std_k e_k
    result = torch.zeros(c.shape[0], width, dtype=torch.float64)
    for i in range(c.shape[0]):
        row = c[i:i + 1]

        def change(t, row=row):
            return torch.func.jvp(lambda p: observed(p, row), (row[:, sl],), (t,))[1]

        d = torch.func.vmap(change)(tangents).double()                          # [K, N, 2 or 3]
        if vis is not None:
            d = d[:, vis[i].to(d.device)]
        result[i] = d.square().sum(-1).mean(-1).sqrt().cpu()
    return result[0] if single else result


__all__ = ["ATTRIBUTES", "ATTRIBUTE_GROUPS", "LIGHT_NORMALS", "camera_facing_normals", "attribute_features",
           "attribute_distance", "feature_metric", "coefficient_scale", "COEFF_STD_FLOOR", "Moments",
           "ExplainedVariance", "explained_variance", "MOTION_GROUPS", "COLOUR_GROUPS", "QUANTITIES",
           "visible_vertices", "component_visibility"]
