"""MiniFace: a procedural morphable face built by our own code (no external data), in BFM's layout.

Same units and conventions as BFM after Deep3D's scaling (face3d.md §1.2, §2): decimetres, xyz interleaved,
y up, faces counter-clockwise seen from the camera at +z, albedo 0-255, bases scaled by their standard
deviations (coefficients ~ N(0, 1)), 80 identity / 64 expression / 80 texture columns, 68 iBUG landmarks.
At the default camera it fills about the same image area as BFM's mean face.

Construction:
  * mesh   -- a disk of parameter space (s, t) on a square grid, mapped through latitude/longitude of an
              ellipsoid to a front face surface and narrowed toward the jaw. One grid row is the mouth line;
              inside the mouth its vertices are duplicated so that the lips are separate (jaw-open parts
              them). A small "mouth cavity" sheet sits 0.12 dm behind the lips and shows through when open.
  * mean   -- heights added for nose, eye sockets, brow ridge, cheekbones, lips and chin; albedo painted
              with eyes (sclera, iris, pupil), brows, lips, nostrils, teeth and mouth interior.
  * bases  -- each group (identity, expression, texture) is a synthetic population x = D z, z ~ N(0, I),
              whose columns D are named semantic variations (one standard deviation each, e.g. "jaw_open")
              plus smooth random detail fields of decaying size filling the group to its width. The exact
              PCA of that population (SVD of D) gives the basis U*S, ordered by variance, like BFM's
              PC*EV; a named variation k is the coefficient vector V[k] (unit norm), see named_directions.
  * amplitudes -- chosen so that the variance sits where a 64 px image can show it (the mini world's networks
              read faces at that size): identity and expression variation is mostly in-plane and carried by a few
              broad named variations (face length and width, chin, jaw, cheeks, temples, mouth width; jaw open,
              jaw/mouth sideways, brow raise, smile), depth-only variations are small and the random detail
              fields are faint (2e-3 dm). Measured at the world's priors with
              ``tools/analysis/component_visibility.py`` at 64 px: identity -- 7 of 80 components move the face
              by >= 0.3 px (1.22, 1.03, 0.57, 0.53, 0.52 px ...) and hold 91 % of the identity vertex variance;
              expression -- 5 of 64 (0.81, 0.57, 0.53, 0.53, 0.30 px) hold 90 %. Local mouth and eye variations
              (pucker, lip press, squint ...) keep small amplitudes: larger ones fold the lips at the prior's tails.
Everything is deterministic (fixed seeds; bit-for-bit for a given numpy/LAPACK build) and cached per process
(about 0.3 s to build).
"""
from __future__ import annotations

import functools

import numpy as np

from .mesh import point_buffer

GRID_N = 101                      # grid points per parameter axis (odd: a centre column at s = 0)
A, B, C = 0.80, 1.00, 0.75        # ellipsoid half-axes (dm): width, height, depth
LON_MAX, LAT_MAX = np.radians(80.0), np.radians(75.0)
# Rows are denser toward the chin (latitude = LAT_MAX * (t + KAPPA (t^2 - 1))): finer lips, and the vertex
# centroid -- which the model subtracts -- lands where BFM's does relative to eyes, nose and mouth.
KAPPA = 0.15
OUTLINE_HALF_WIDTH, OUTLINE_TOP, OUTLINE_BOTTOM = 0.77, 0.95, 0.90  # egg outline (before jaw narrowing)
MOUTH_Y, MOUTH_HALF = -0.39, 0.25  # mouth line height and corner x (dm), as BFM's 5-point template
EYE_X, EYE_Y = 0.31, 0.27
CAVITY_DEPTH = 0.12
FACE, LOWER_LIP, CAVITY = 0, 1, 2  # vertex labels (LOWER_LIP: lower copies of the mouth-line vertices)
SEEDS = {"id": 1001, "exp": 2002, "tex": 3003}


def _g(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _g2(x, y, cx, cy, sx, sy):
    """A left/right pair of Gaussians at +-cx (smooth across x = 0, unlike a Gaussian of |x|)."""
    return _g(x, y, cx, cy, sx, sy) + _g(x, y, -cx, cy, sx, sy)


def _sstep(u):
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _width_factor(y):
    # Narrow the lower face toward the chin (egg-shaped outline).
    return 1.0 - 0.35 * _sstep(-y / 0.9)


def _outline(x, y):
    """< 1 inside the face outline: an ellipse in (x / width_factor(y), y), taller above than below."""
    half_h = np.where(y > 0, OUTLINE_TOP, OUTLINE_BOTTOM)
    return (x / (OUTLINE_HALF_WIDTH * _width_factor(y))) ** 2 + (y / half_h) ** 2


def _latitude(t):
    return LAT_MAX * (t + KAPPA * (t * t - 1.0))


def _row_param(lat):
    """Inverse of _latitude."""
    q = lat / LAT_MAX
    return (-1.0 + np.sqrt(1.0 + 4.0 * KAPPA * (KAPPA + q))) / (2.0 * KAPPA)


def _surface(s, t):
    """Parameter (s, t) -> base surface (x, y, z) through ellipsoid longitude/latitude."""
    lon, lat = s * LON_MAX, _latitude(t)
    y = B * np.sin(lat)
    x = A * np.cos(lat) * np.sin(lon) * _width_factor(y)
    z = C * np.cos(lat) * np.cos(lon)
    return x, y, z


# ---------------------------------------------------------------------------------------------- mesh
def _mesh():
    n, c = GRID_N, GRID_N // 2
    h = 1.0 / c
    ii, jj = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")  # ii: row (t), jj: column (s)
    s_grid, t_grid = (jj - c) * h, (ii - c) * h  # integer steps times h: exactly antisymmetric in s
    inside = _outline(*_surface(s_grid, t_grid)[:2]) <= 1.0
    vid = np.full((n, n), -1, np.int64)
    vid[inside] = np.arange(inside.sum())
    s, t = s_grid[inside].copy(), t_grid[inside].copy()
    # Snap border vertices along their parameter ray onto the outline (bisection): a smooth silhouette
    # instead of a staircase.
    pad = np.pad(inside, 1)
    border = (inside & ~(pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]))[inside]
    rho = np.hypot(s[border], t[border])
    ds, dt = s[border] / rho, t[border] / rho
    lo, hi = rho, rho + 2 * h
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        out = _outline(*_surface(mid * ds, mid * dt)[:2]) > 1.0
        lo, hi = np.where(out, lo, mid), np.where(out, mid, hi)
    s[border], t[border] = lo * ds, lo * dt

    # Mouth row (nearest to MOUTH_Y) and its half-width in columns (corner nearest to MOUTH_HALF).
    i_m = c + int(round(_row_param(np.arcsin(MOUTH_Y / B)) / h))
    row_x = _surface((np.arange(n) - c) * h, np.full(n, (i_m - c) * h))[0]
    m = int(np.argmin(np.abs(row_x[c:] - MOUTH_HALF)))
    slit_cols = np.arange(c - m + 1, c + m)  # strictly inside the corners; the corners stay shared
    lower = np.full(n, -1, np.int64)
    lower[slit_cols] = len(s) + np.arange(len(slit_cols))
    label = np.zeros(len(s) + len(slit_cols), np.int64)
    label[len(s):] = LOWER_LIP
    s = np.concatenate([s, s[vid[i_m, slit_cols]]])
    t = np.concatenate([t, t[vid[i_m, slit_cols]]])

    def cells(ids, below_mouth_row=None):
        """Triangles of grid cells (CCW seen from +z); cells with three corners give one triangle."""
        a, b = ids[:-1, :-1], ids[:-1, 1:]      # bottom-left, bottom-right
        cc, d = ids[1:, 1:], ids[1:, :-1]       # top-right, top-left
        if below_mouth_row is not None:         # cells just below the mouth row use the lower copies
            cc, d = cc.copy(), d.copy()
            r = below_mouth_row - 1
            cc[r] = np.where(lower[1:] >= 0, lower[1:], cc[r])
            d[r] = np.where(lower[:-1] >= 0, lower[:-1], d[r])
        quad = np.stack([a, b, cc, d], -1)      # [n-1, n-1, 4] in CCW order
        left = (np.arange(n - 1) < c)[None, :].repeat(n - 1, 0)
        tris = []
        full = (quad >= 0).all(-1)
        # Mirror-symmetric diagonals: a-c on the left half, b-d on the right half.
        q = quad[full & left]
        tris += [q[:, [0, 1, 2]], q[:, [0, 2, 3]]]
        q = quad[full & ~left]
        tris += [q[:, [0, 1, 3]], q[:, [1, 2, 3]]]
        three = (quad >= 0).sum(-1) == 3
        for missing in range(4):
            q = quad[three & (quad[..., missing] < 0)]
            keep = [k for k in (missing + 1, missing + 2, missing + 3)]
            tris.append(q[:, [k % 4 for k in keep]])
        return np.concatenate(tris, 0)

    faces = cells(vid, below_mouth_row=i_m)

    # Mouth cavity: a copy of the grid patch around the mouth, pushed back (hidden while the lips meet).
    cav_par = inside & ((s_grid / (1.15 * m * h)) ** 2 + ((t_grid - (i_m - c) * h + 0.03) / 0.13) ** 2 <= 1.0)
    cav = np.full((n, n), -1, np.int64)
    parents = vid[cav_par]
    cav[cav_par] = len(s) + np.arange(len(parents))
    s = np.concatenate([s, s[parents]])
    t = np.concatenate([t, t[parents]])
    label = np.concatenate([label, np.full(len(parents), CAVITY)])
    faces = np.concatenate([faces, cells(cav)], 0)
    is_border = np.zeros(len(s), bool)
    is_border[:len(border)] = border
    return dict(s=s, t=t, label=label, faces=faces, vid=vid, lower=lower, i_m=i_m, m=m, c=c, h=h,
                border=is_border)


# ------------------------------------------------------------------------------------------- mean shape
def _mean_height(x, y):
    """Facial relief (dm) added to the ellipsoid's z."""
    nose_len = np.clip((0.28 - y) / 0.34, 0.0, 1.0)  # 0 at the nose root, 1 at the tip
    nose_w = 0.045 + 0.05 * nose_len
    nose_h = 0.05 + 0.19 * nose_len ** 1.5
    under = _sstep((-0.06 - y) / 0.10)               # the underside of the nose falls back quickly
    nose = nose_h * (1.0 - under) * np.exp(-0.5 * (x / nose_w) ** 2) * (y < 0.34) * _sstep((0.34 - y) / 0.06)
    alae = 0.07 * _g2(x, y, 0.085, -0.11, 0.045, 0.045)
    sockets = -0.09 * _g2(x, y, EYE_X, EYE_Y, 0.12, 0.075) + 0.035 * _g2(x, y, EYE_X, EYE_Y - 0.005, 0.065, 0.04)
    brow = 0.045 * _g2(x, y, 0.30, 0.44, 0.17, 0.06)
    cheekbones = 0.05 * _g2(x, y, 0.43, 0.05, 0.12, 0.10)
    lips = 0.055 * _g(x, y, 0, MOUTH_Y + 0.045, 0.15, 0.04) + 0.05 * _g(x, y, 0, MOUTH_Y - 0.055, 0.13, 0.045)
    philtrum = 0.02 * _g(x, y, 0, MOUTH_Y + 0.15, 0.05, 0.06)
    sulcus = -0.03 * _g(x, y, 0, MOUTH_Y - 0.17, 0.12, 0.04)
    chin = 0.07 * _g(x, y, 0, -0.76, 0.16, 0.10)
    return nose + alae + sockets + brow + cheekbones + lips + philtrum + sulcus + chin


# ----------------------------------------------------------------------------------------------- painting
def _eye_mask(x, y, cx, soft=0.012):
    """Almond eye (soft 0-1) centred at (cx, EYE_Y)."""
    dx, dy = (x - cx) / 0.135, y - EYE_Y
    lid = np.clip(1.0 - dx ** 2, 0.0, None)
    up, low = 0.055 * lid, 0.038 * lid
    inside = np.minimum(up - dy, dy + low)
    return _sstep(inside / soft + 0.5) * (np.abs(dx) < 1.0)


def _paint_masks(x, y, label, side):
    eyes = _eye_mask(x, y, EYE_X) + _eye_mask(x, y, -EYE_X)
    ex = np.where(x > 0, EYE_X, -EYE_X)
    r = np.hypot(x - ex, y - (EYE_Y + 0.004))
    iris = eyes * _sstep((0.05 - r) / 0.012 + 0.5)
    pupil = eyes * _sstep((0.022 - r) / 0.010 + 0.5)
    # Eyelid line: a dark rim just outside the upper lid.
    near_eye = np.abs(np.abs(x) - EYE_X) < 0.15
    lash = _sstep((0.02 - np.abs(_eye_dist(x, y))) / 0.02) * (y > EYE_Y - 0.01) * (1 - eyes) * near_eye
    # Brows: arched bands, thick at the inner end, tapering outward.
    ax = np.abs(x)
    centre_y = 0.405 + 0.045 * np.exp(-0.5 * ((ax - 0.32) / 0.12) ** 2)
    thick = 0.034 - 0.016 * np.clip((ax - 0.12) / 0.38, 0, 1)
    brows = _sstep((thick - np.abs(y - centre_y)) / 0.016 + 0.5) * _sstep((ax - 0.10) / 0.03) \
        * _sstep((0.52 - ax) / 0.04)
    # Lips: between the mouth line and the lip outlines (Cupid's bow on top).
    xm = x / LIP_HALF
    lips = _sstep((np.minimum(_lip_top(x) - y, y - _lip_bottom(x))) / 0.012 + 0.5) * (np.abs(xm) < 1)
    seam = np.exp(-0.5 * ((y - MOUTH_Y) / 0.007) ** 2) * (np.abs(xm) < 1)
    nostrils = _sstep((1 - (((ax - 0.055) / 0.03) ** 2 + ((y + 0.135) / 0.016) ** 2)) * 3)
    skin = 1 - np.clip(eyes + brows + lips + nostrils + lash, 0, 1)
    skin = np.where(label == CAVITY, 0.0, skin)
    return dict(eyes=eyes, iris=iris, pupil=pupil, lash=lash, brows=brows, lips=lips, seam=seam,
                nostrils=nostrils, skin=skin)


LIP_HALF = 0.29  # painted lips reach a little beyond the slit's corners


def _lip_top(x):
    """Upper outline of the painted lips (Cupid's bow), dm."""
    lid = np.clip(1 - (x / LIP_HALF) ** 2, 0, None)
    return MOUTH_Y + lid ** 0.7 * (0.05 + 0.012 * np.exp(-0.5 * ((np.abs(x) - 0.07) / 0.04) ** 2)
                                  - 0.012 * np.exp(-0.5 * (x / 0.025) ** 2))


def _lip_bottom(x):
    return MOUTH_Y - 0.075 * np.clip(1 - (x / LIP_HALF) ** 2, 0, None) ** 0.6


def _eye_dist(x, y):
    """Approximate signed distance (dm) to the upper-lid curve of the nearer eye (positive above it)."""
    ex = np.where(x > 0, EYE_X, -EYE_X)
    dx = (x - ex) / 0.135
    return (y - EYE_Y) - 0.055 * np.clip(1.0 - dx ** 2, 0.0, None) - 0.004 * (np.abs(dx) > 1.0)


SKIN = np.array([214.0, 164.0, 138.0])
LIP = np.array([178.0, 92.0, 92.0])
BROW = np.array([82.0, 58.0, 44.0])
SCLERA = np.array([236.0, 232.0, 226.0])
IRIS = np.array([96.0, 70.0, 48.0])
PUPIL = np.array([22.0, 16.0, 16.0])
NOSTRIL = np.array([100.0, 60.0, 55.0])
TEETH = np.array([232.0, 226.0, 210.0])
MOUTH = np.array([70.0, 24.0, 30.0])


def _albedo(x, y, label, masks):
    col = np.broadcast_to(SKIN, (len(x), 3)).copy()
    mix = lambda col, w, c: col * (1 - w[:, None]) + c * w[:, None]  # noqa: E731
    col = mix(col, masks["lips"], LIP)
    col = mix(col, masks["seam"] * (label != CAVITY), LIP * 0.55)
    col = mix(col, masks["brows"], BROW)
    col = mix(col, masks["nostrils"], NOSTRIL)
    col = mix(col, masks["lash"] * 0.8, BROW * 0.6)
    col = mix(col, masks["eyes"], SCLERA)
    col = mix(col, masks["iris"], IRIS)
    col = mix(col, masks["pupil"], PUPIL)
    # Cavity: upper teeth along the top, dark mouth interior below.
    teeth = _sstep((y - (MOUTH_Y - 0.035)) / 0.01) * _sstep((0.19 - np.abs(x)) / 0.03)
    cav = mix(np.broadcast_to(MOUTH, (len(x), 3)).copy(), teeth, TEETH)
    return np.where((label == CAVITY)[:, None], cav, col)


# ---------------------------------------------------------------------------------------- named variations
def _identity_fields(x, y, z, side, zc):
    """name -> displacement [N, 3] (dm) of one standard deviation."""
    zero = np.zeros_like(x)
    ym = MOUTH_Y

    def f(dx=zero, dy=zero, dz=zero):
        return np.stack([dx + zero, dy + zero, dz + zero], -1)

    eye_c = np.where(x > 0, EYE_X, -EYE_X)
    eye_w = _g2(x, y, EYE_X, EYE_Y, 0.10, 0.07)
    return {
        "face_width": f(dx=0.09 * x),
        "face_length": f(dy=0.08 * y),
        "face_depth": f(dz=0.03 * (z - zc)),
        "jaw_width": f(dx=0.16 * x * _sstep((-0.1 - y) / 0.6)),
        "chin_length": f(dy=-0.08 * _sstep((-0.5 - y) / 0.35)),
        "chin_protrusion": f(dz=0.02 * _g(x, y, 0, -0.78, 0.2, 0.15)),
        "chin_width": f(dx=0.28 * x * _g(x, y, 0, -0.75, 0.3, 0.15)),
        "cheek_fullness": f(dx=0.10 * np.tanh(x / 0.1) * _g2(x, y, 0.42, -0.15, 0.15, 0.15),
                            dz=0.035 * _g2(x, y, 0.42, -0.15, 0.15, 0.15)),
        "cheekbones": f(dz=0.02 * _g2(x, y, 0.45, 0.08, 0.12, 0.08)),
        "forehead_slope": f(dz=-0.02 * _sstep((y - 0.45) / 0.5)),
        "temple_width": f(dx=0.11 * x * _sstep((y - 0.15) / 0.5)),
        "nose_length": f(dy=-0.07 * _g(x, y, 0, -0.08, 0.12, 0.12)),
        "nose_width": f(dx=0.6 * x * _g(x, y, 0, -0.1, 0.12, 0.08)),
        "nose_bridge": f(dz=0.03 * _g(x, y, 0, 0.12, 0.05, 0.12)),
        "nose_tip": f(dz=0.03 * _g(x, y, 0, -0.06, 0.06, 0.05)),
        "eye_spacing": f(dx=0.06 * np.tanh(x / 0.1) * _g(x, y, 0, EYE_Y, 0.5, 0.12)),
        "eye_depth": f(dz=-0.02 * eye_w),
        "eye_size": f(dx=0.18 * (x - eye_c) * eye_w, dy=0.18 * (y - EYE_Y) * eye_w),
        "brow_height": f(dy=0.07 * _g2(x, y, 0.32, 0.42, 0.18, 0.08)),
        "brow_ridge": f(dz=0.02 * _g2(x, y, 0.3, 0.44, 0.2, 0.06)),
        "lip_fullness": f(dy=0.6 * (y - ym) * _g(x, y, 0, ym, 0.2, 0.07), dz=0.025 * _g(x, y, 0, ym, 0.2, 0.07)),
        "mouth_width": f(dx=0.35 * x * _g(x, y, 0, ym, 0.28, 0.1)),
    }


def _jaw_weight(x, y, side):
    """How much a vertex follows the jaw: 1 for the lower lip and chin, 0 above the mouth line; continuous
    across the mouth line outside the corners, discontinuous only along the slit (the lips part there)."""
    in_slit = 1.0 - _sstep((np.abs(x) - (MOUTH_HALF - 0.06)) / 0.07)
    depth_below = MOUTH_Y - y + 0.12 * in_slit
    band = 0.12 + 0.2 * (1.0 - in_slit)  # beyond the corners the cheek stretches over a wider band
    lateral = 1.0 - 0.6 * _sstep((np.abs(x) - 0.2) / 0.5)
    return np.where(side < 0, _sstep(depth_below / band), 0.0) * lateral


def _expression_fields(x, y, z, side, label):
    zero = np.zeros_like(x)
    ym = MOUTH_Y

    def f(dx=zero, dy=zero, dz=zero):
        return np.stack([dx + zero, dy + zero, dz + zero], -1)

    # Jaw opening: a small rotation about a pivot near the ears, applied with the jaw weight.
    theta, pivot_y, pivot_z = 0.09, 0.05, -0.35
    w = _jaw_weight(x, y, side)
    w = np.where(label == CAVITY, 0.75 * _sstep((ym + 0.01 - y) / 0.12), w)
    jaw = f(dy=-theta * (z - pivot_z) * w, dz=theta * (y - pivot_y) * w)
    corners = _g2(x, y, 0.26, ym, 0.10, 0.08)
    smile_l = _g(x, y, -0.26, ym, 0.10, 0.08)
    smile_r = _g(x, y, 0.26, ym, 0.10, 0.08)
    cheeks = _g2(x, y, 0.38, -0.12, 0.12, 0.12)

    def smile_field(c, sign):
        cheek = _g(x, y, sign * 0.38, -0.12, 0.12, 0.12)
        return f(dx=0.045 * sign * c, dy=0.06 * c + 0.03 * cheek, dz=0.03 * cheek)

    eyes_flat = np.exp(-((np.abs(x) - EYE_X) / 0.17) ** 4 - ((y - EYE_Y) / 0.085) ** 4)
    ex = np.tanh(x / 0.05)
    lips_band = _g(x, y, 0, ym, 0.22, 0.07)
    upper_only = np.where(side > 0, 1.0, 0.0) * (1.0 - _sstep((np.abs(x) - 0.14) / 0.08))
    lower_only = np.where(side < 0, 1.0, 0.0) * (1.0 - _sstep((np.abs(x) - 0.14) / 0.08))
    fields = {
        "jaw_open": jaw,
        "smile": f(dx=0.07 * ex * corners, dy=0.09 * corners + 0.045 * cheeks, dz=0.04 * cheeks),
        "frown": f(dy=-0.06 * _g2(x, y, 0.26, ym, 0.09, 0.07) + 0.015 * _g(x, y, 0, -0.72, 0.15, 0.1)),
        "brow_raise": f(dy=0.07 * _g2(x, y, 0.3, 0.45, 0.3, 0.12)),
        "brow_furrow": f(dx=-0.045 * ex * _g2(x, y, 0.15, 0.42, 0.1, 0.08),
                         dy=-0.06 * _g2(x, y, 0.15, 0.42, 0.1, 0.08), dz=0.02 * _g2(x, y, 0.15, 0.42, 0.1, 0.08)),
        "pucker": f(dx=-0.25 * x * lips_band, dz=0.05 * _g(x, y, 0, ym, 0.15, 0.08)),
        "lip_press": f(dy=-0.4 * (y - ym) * lips_band, dz=-0.02 * _g(x, y, 0, ym, 0.2, 0.06)),
        "cheek_puff": f(dx=0.06 * ex * _g2(x, y, 0.36, -0.3, 0.13, 0.13), dz=0.04 * _g2(x, y, 0.36, -0.3, 0.13, 0.13)),
        "squint": f(dy=-0.3 * (y - EYE_Y) * _g2(x, y, EYE_X, EYE_Y, 0.12, 0.06) + 0.01 * cheeks),
        "eye_close": f(dy=-0.45 * (y - (EYE_Y - 0.01)) * eyes_flat),
        "smile_left": smile_field(smile_l, -1.0),
        "smile_right": smile_field(smile_r, 1.0),
        "mouth_left": f(dx=-0.06 * _g(x, y, 0, ym, 0.3, 0.12)),
        "jaw_left": f(dx=-0.05 * np.where(label == CAVITY, 0.75, 1.0) * np.maximum(w, 0)),
        "nose_wrinkle": f(dy=0.03 * _g2(x, y, 0.08, -0.02, 0.08, 0.08), dz=0.015 * _g2(x, y, 0.08, -0.02, 0.08, 0.08)),
        "upper_lip_raise": f(dy=0.03 * _g(x, y, 0, ym + 0.03, 0.18, 0.06) * upper_only),
        "lower_lip_drop": f(dy=-0.03 * _g(x, y, 0, ym - 0.03, 0.16, 0.06) * lower_only),
        "lip_stretch": f(dx=0.15 * x * _g(x, y, 0, ym, 0.2, 0.07)),
    }
    # The cavity follows only the jaw (and the mouth's sideways moves), not the lips' surface details.
    for name, d in fields.items():
        if name not in ("jaw_open", "jaw_left", "mouth_left"):
            d[label == CAVITY] = 0.0
    return fields


def _texture_fields(x, y, label, masks, meantex):
    zero = np.zeros_like(x)
    skin, lips, brows, iris = masks["skin"], masks["lips"], masks["brows"], masks["iris"]

    def f(w, rgb):
        return (w + zero)[:, None] * np.asarray(rgb, float)[None, :]

    not_eye = 1.0 - masks["eyes"] + masks["iris"]
    face = (label != CAVITY).astype(float)
    fields = {
        "skin_tone": -0.18 * meantex * (not_eye * face)[:, None],
        "skin_redness": f(skin, (10, -3, -5)),
        "skin_yellowness": f(skin, (3, 4, -7)),
        "lip_colour": f(lips, (22, -12, -6)),
        "brow_darkness": f(brows, (-35, -28, -22)),
        "eye_colour": f(iris * (1 - masks["pupil"]), (-25, 15, 55)),
        "blush": f(skin * _g2(x, y, 0.38, -0.1, 0.12, 0.1), (22, -6, -4)),
        "beard_shadow": f(skin * _sstep((-0.3 - y) / 0.3), (-16, -16, -12)),
        "under_eye": f(skin * _g2(x, y, EYE_X, EYE_Y - 0.1, 0.12, 0.04), (-14, -14, -4)),
        "eyeshadow": f(skin * _g2(x, y, EYE_X, EYE_Y + 0.06, 0.13, 0.035), (-10, -15, 5)),
        "forehead_shine": f(skin * _g(x, y, 0, 0.7, 0.4, 0.2), (14, 14, 14)),
    }
    # Freckles: small brownish spots over nose and cheeks (fixed pattern).
    rng = np.random.default_rng(SEEDS["tex"] + 1)
    spots = np.zeros_like(x)
    for cx, cy in zip(rng.uniform(-0.45, 0.45, 70), rng.uniform(-0.25, 0.15, 70), strict=True):
        spots += _g(x, y, cx, cy, 0.012, 0.012)
    fields["freckles"] = f(np.clip(spots, 0, 1) * skin, (-20, -22, -18))
    return fields


def _detail_fields(x, y, n_fields, seed, amp0, decay, channel_mix, geometric):
    """Smooth random fields, alternately mirror-symmetric and antisymmetric, RMS amp0 * decay^k.
    Each bump's 3-vector is channel_mix @ N(0, I). For displacements (``geometric``) the mirror image also
    flips the x component."""
    rng = np.random.default_rng(seed)
    out = []
    mirror = np.array([-1.0, 1.0, 1.0]) if geometric else None
    for k in range(n_fields):
        field = np.zeros((len(x), 3))
        sign = 1.0 if k % 2 == 0 else -1.0
        for _ in range(3):
            cx, cy = rng.uniform(-0.6, 0.6), rng.uniform(-0.8, 0.8)
            sig = rng.uniform(0.07, 0.22)
            v = channel_mix @ rng.standard_normal(3)
            vm = v * mirror if mirror is not None else v
            field += _g(x, y, cx, cy, sig, sig)[:, None] * v + sign * _g(x, y, -cx, cy, sig, sig)[:, None] * vm
        rms = np.sqrt((field ** 2).sum(1).mean())
        out.append(field * (amp0 * decay ** k / max(rms, 1e-12)))
    return out


def _pca(fields: list, n_cols: int):
    """Exact PCA of x = D z, z ~ N(0, I): basis U*S [3N, n_cols], stds S, named coefficient rows V."""
    d = np.stack([fld.reshape(-1) for fld in fields], 1)
    assert d.shape[1] == n_cols, (d.shape, n_cols)
    u, sv, vt = np.linalg.svd(d, full_matrices=False)
    v = vt.T  # d = u diag(sv) v^T  ->  named field k = basis @ v[k]
    # Fix the sign of each component deterministically (largest |v| entry positive).
    flip = np.sign(v[np.argmax(np.abs(v), 0), np.arange(n_cols)])
    u, v = u * flip, v * flip
    return u * sv, sv, v


# ------------------------------------------------------------------------------------------------ build
@functools.lru_cache(maxsize=1)
def build_miniface() -> dict:
    """All MiniFace arrays (read-only numpy, 0-based indices), keys as in BFM_model_front plus extras."""
    mesh = _mesh()
    s, t, label = mesh["s"], mesh["t"], mesh["label"]
    x, y, z = _surface(s, t)
    z = z + _mean_height(x, y)
    z = np.where(label == CAVITY, z - CAVITY_DEPTH, z)
    n = len(x)
    t_m = (mesh["i_m"] - mesh["c"]) * mesh["h"]
    on_row = np.abs(t - t_m) < 1e-9
    # +1 above the mouth line (upper-lip copies included), -1 below (lower copies), 0 shared row points.
    side = np.where(t > t_m + 1e-9, 1.0, np.where(t < t_m - 1e-9, -1.0, 0.0))
    slit_upper = on_row & (label == FACE) & np.isin(np.arange(n), mesh["vid"][mesh["i_m"]][mesh["lower"] >= 0])
    side = np.where(slit_upper, 1.0, side)
    side = np.where(label == LOWER_LIP, -1.0, side)
    side = np.where(label == CAVITY, 0.0, side)

    masks = _paint_masks(x, y, label, side)
    meantex = _albedo(x, y, label, masks)
    pos = np.stack([x, y, z], -1)
    zc = z[label != CAVITY].mean()

    id_named = _identity_fields(x, y, z, side, zc)
    exp_named = _expression_fields(x, y, z, side, label)
    tex_named = _texture_fields(x, y, label, masks, meantex)
    groups = {}
    # Detail bumps: displacements mostly along z; colours mostly lightness and skin-like chroma, so that
    # random texture coefficients give plausible skin rather than rainbow blotches.
    tex_mix = np.array([[1.0, 0.30, 0.03], [1.0, 0.12, -0.04], [1.0, 0.04, 0.04]])
    for group, named, n_cols, amp0, mix in (
            ("id", id_named, 80, 0.002, np.diag([0.5, 0.5, 1.0])),
            ("exp", exp_named, 64, 0.002, np.diag([0.5, 0.7, 1.0])),
            ("tex", tex_named, 80, 4.0, tex_mix)):
        detail = _detail_fields(x, y, n_cols - len(named), SEEDS[group], amp0, 0.95, mix, group != "tex")
        if group == "exp":  # expression details stay off the mouth cavity, like the named ones
            for d in detail:
                d[label == CAVITY] = 0.0
        basis, std, v = _pca(list(named.values()) + detail, n_cols)
        groups[group] = (basis, std, {name: v[k] for k, name in enumerate(named)})

    # 68 iBUG landmarks at their semantic places.
    keypoints = _landmarks(mesh, x, y, label, side)
    faces = mesh["faces"]
    rho = np.hypot(s, t)
    front_v = ((rho <= 0.93) & (label != CAVITY)) | (label == CAVITY)
    front_faces = faces[front_v[faces].all(1)]
    skinmask = (masks["skin"] > 0.9) & (rho <= 0.93) & (label != CAVITY)

    out = {
        "meanshape": pos.reshape(-1),
        "idBase": groups["id"][0], "exBase": groups["exp"][0], "texBase": groups["tex"][0],
        "meantex": meantex.reshape(-1),
        "tri": faces, "point_buf": point_buffer(faces, n), "keypoints": keypoints,
        "front_faces": front_faces, "skinmask": skinmask,
        "id_std": groups["id"][1], "exp_std": groups["exp"][1], "tex_std": groups["tex"][1],
        "vertex_label": label, "vertex_side": side,
    }
    for arr in out.values():
        arr.setflags(write=False)
    out["named_directions"] = {name: (g, vec) for g in ("id", "exp", "tex") for name, vec in groups[g][2].items()}
    for _, vec in out["named_directions"].values():
        vec.setflags(write=False)
    return out


def _landmarks(mesh, x, y, label, side) -> np.ndarray:
    t = mesh["t"]
    n = len(x)
    face = label != CAVITY

    def nearest(px, py, allowed):
        d = (x - px) ** 2 + (y - py) ** 2
        return int(np.argmin(np.where(allowed, d, np.inf)))

    ids = []
    any_face = face & (label != LOWER_LIP)
    # Jaw 0-16: just inside the outline, image-left (ear level) -> chin -> image-right, by angle around a
    # point between the eyes.
    border = mesh["border"]
    cy = 0.1
    ang_b = np.arctan2(y[border] - cy, x[border])
    bx, by = x[border], y[border]
    for ang in np.radians(np.linspace(172.0, 368.0, 17)):
        k = np.argmin(np.abs(np.angle(np.exp(1j * (ang_b - ang)))))
        ids.append(nearest(0.96 * bx[k], cy + 0.96 * (by[k] - cy), any_face))
    brow_x = [-0.50, -0.41, -0.32, -0.23, -0.14]
    brow_y = lambda bx: 0.405 + 0.045 * np.exp(-0.5 * ((abs(bx) - 0.32) / 0.12) ** 2)  # noqa: E731
    ids += [nearest(bx, brow_y(bx), any_face) for bx in brow_x]
    ids += [nearest(-bx, brow_y(bx), any_face) for bx in reversed(brow_x)]
    ids += [nearest(0.0, by, any_face) for by in (0.25, 0.15, 0.05, -0.05)]           # 27-30 bridge -> tip
    ids += [nearest(bx, by, any_face) for bx, by in ((-0.10, -0.13), (-0.05, -0.145), (0.0, -0.155),
                                                     (0.05, -0.145), (0.10, -0.13))]  # 31-35
    up, lo = 0.055 * 0.75, 0.038 * 0.75
    left_eye = [(-EYE_X - 0.135, EYE_Y), (-EYE_X - 0.05, EYE_Y + up), (-EYE_X + 0.05, EYE_Y + up),
                (-EYE_X + 0.135, EYE_Y), (-EYE_X + 0.05, EYE_Y - lo), (-EYE_X - 0.05, EYE_Y - lo)]
    right_eye = [(EYE_X - 0.135, EYE_Y), (EYE_X - 0.05, EYE_Y + up), (EYE_X + 0.05, EYE_Y + up),
                 (EYE_X + 0.135, EYE_Y), (EYE_X + 0.05, EYE_Y - lo), (EYE_X - 0.05, EYE_Y - lo)]
    ids += [nearest(px, py, any_face) for px, py in left_eye + right_eye]               # 36-47
    # Mouth: the row's vertices give the mouth line; lip landmarks use the copy on their side.
    above = face & (side >= 0) & (label != LOWER_LIP)
    below = face & (side <= 0)
    row = np.abs(t - (mesh["i_m"] - mesh["c"]) * mesh["h"]) < 1e-9
    order = np.argsort(x[row & face])
    row_xs, row_ys = x[row & face][order], y[row & face][order]

    def row_y(px):
        return float(np.interp(px, row_xs, row_ys))
    corner = MOUTH_HALF
    # Outer lip points: 80% of the way from the mouth line to the painted outline (inside the red).
    outer = [(-LIP_HALF + 0.01, "row", above)] + [(px, "top", above) for px in (-0.17, -0.08, 0.0, 0.08, 0.17)] \
        + [(LIP_HALF - 0.01, "row", above)] + [(px, "bottom", below) for px in (0.17, 0.08, 0.0, -0.08, -0.17)]
    for px, where, allowed in outer:
        ry = row_y(px)
        py = ry if where == "row" else ry + 0.8 * ((_lip_top(px) if where == "top" else _lip_bottom(px)) - MOUTH_Y)
        ids.append(nearest(px, py, allowed))                                             # 48-59
    slit_upper = row & (label == FACE) & (side > 0)
    slit_lower = label == LOWER_LIP
    corner_l = nearest(-corner, row_y(-corner), row & (label == FACE) & (side == 0) & (x < 0))
    corner_r = nearest(corner, row_y(corner), row & (label == FACE) & (side == 0) & (x > 0))
    inner = [corner_l] + [nearest(px, row_y(px), slit_upper) for px in (-0.08, 0.0, 0.08)] + [corner_r] \
        + [nearest(px, row_y(px), slit_lower) for px in (0.08, 0.0, -0.08)]
    ids += inner                                                                         # 60-67
    assert len(ids) == 68 and max(ids) < n
    return np.asarray(ids, np.int64)
