"""The face editor's controls: what each slider means, its range, and the light controls' mapping to SH gamma.

Controls (:data:`CONTROLS`, in this order; ``attribute`` is one of :data:`cddfm3d.editing.ATTRIBUTES`):

============ ===== ====================== ================ =================================================
attribute    index label                  range            value
============ ===== ====================== ================ =================================================
shape        0..3  Shape 0..3             [-3, 3] std      identity PCA coefficient k / the prior's std
expression   0..3  Expression 0..3        [-3, 3] std      expression PCA coefficient k / the prior's std
albedo       0..3  Albedo 0..3            [-3, 3] std      texture PCA coefficient k / the prior's std
pose         0..2  Pitch, Yaw, Roll       prior limit      rotation angle in degrees (Deep3D's Euler order)
                                          x 1.5
light        0     Light ambient          [-0.5, 0.5]      DC offset added to Deep3D's ambient 0.8
light        1     Light azimuth          [-180, 180] deg  0: from the camera, +: from the face's left
light        2     Light elevation        [-60, 80] deg    +: from above
light        3     Light strength         [0, 1]           band-1 irradiance relative to the DC irradiance
============ ===== ====================== ================ =================================================

The std is :func:`cddfm3d.world.priors.prior_std` (the mini world's prior, id 0.9, exp 0.8, tex 0.7; the model
takes another, e.g. a real-world T's labels' std, as ``EditorModel(..., coeff_std=...)``); the pose
ranges are :data:`cddfm3d.world.priors.POSE_DEG`'s truncation limits widened by :data:`POSE_WIDEN` (the generator
was trained inside the limits; a little beyond still renders, far beyond does not). The azimuth covers the whole
circle (:func:`~cddfm3d.face3d.lighting.light_angles_deg` gives (-180, 180]), so a source's azimuth is never outside
its slider; the elevation range holds the prior's lights (a source may still lie outside it, and outside the
ambient and strength ranges: the model accepts a source's own value unclamped).

**Strength 0 has no direction.** The azimuth and elevation set the direction of the band-1 (directional) part of
the light and the strength its size: at strength 0 that part is zero, so the azimuth and elevation controls have no
effect (the light is the ambient level alone), and a light without band-1 terms reads as azimuth 0, elevation 0.

Light mapping (the four light controls are the parameters of
:func:`cddfm3d.face3d.lighting.directional_light`): with ``g`` the gamma [3, 9] (colour-major) and ``m`` its mean
over the three colours,

* ambient = ``m[0]`` (the DC offset);
* (elevation, azimuth) = :func:`cddfm3d.face3d.lighting.light_angles_deg` (the direction of the colour-mean band-1
  vector ``m[1:4]``);
* strength = ``|m[1:4]| / |directional_light(0, 0, 1, ambient)[1:4]|``, i.e. ``|m[1:4]| * A1 C1 / ((0.8 + ambient)
  * A0 C0)``: directional_light's band-1 vector is ``strength * (0.8 + ambient) * A0 C0 / (A1 C1)`` times a unit
  direction, so dividing by the norm of the unit-strength vector inverts it exactly (written through the function
  so that the constant is directional_light's own).

For a white light with no second-order terms (what directional_light makes) this recovers its four arguments
(:func:`light_params` is its inverse). A light of the prior (:func:`cddfm3d.world.priors.light_gamma`) is also
tinted (each colour's SH vector times ``t_c``, DC shifted by ``(t_c - 1) 0.8``) and has second-order terms: the
angles and the strength are still exactly its directional light's (the tint scales the band-1 and the DC
irradiance alike and the colour mean keeps the ratio), the ambient is the colour-mean level
``(0.8 + ambient) mean(t) - 0.8``, and the second-order terms are not read.

A change of the light controls from the source's parameters ``p_s`` to ``p`` gives the target gamma
``gamma_s + directional_light(p) - directional_light(p_s)`` (:func:`light_target`): the tint and the second-order
terms of the source are kept, the directional part is replaced, and controls left at the source's values give the
source gamma exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..face3d.lighting import INIT_AMBIENT, directional_light, light_angles_deg
from ..world.priors import POSE_DEG

N_PCA_CONTROLS = 4              # sliders for the first PCA coefficients of shape, expression and albedo
PCA_RANGE = (-3.0, 3.0)         # prior std units
POSE_WIDEN = 1.5                # pose slider range = the prior's truncation limit x this
POSE_NAMES = ("pitch", "yaw", "roll")
LIGHT_NAMES = ("ambient", "azimuth", "elevation", "strength")   # at strength 0, azimuth and elevation do nothing
LIGHT_RANGES = {"ambient": (-0.5, 0.5), "azimuth": (-180.0, 180.0), "elevation": (-60.0, 80.0),
                "strength": (0.0, 1.0)}
LIGHT_STEPS = {"ambient": 0.01, "azimuth": 1.0, "elevation": 1.0, "strength": 0.01}
LIGHT_UNITS = {"ambient": "", "azimuth": "deg", "elevation": "deg", "strength": ""}


@dataclass(frozen=True)
class Control:
    """One slider of the editor.

    ``attribute`` (one of :data:`cddfm3d.editing.ATTRIBUTES`) and ``index`` name it as in
    :meth:`cddfm3d.ui.EditorModel.set`; ``label`` is what a person reads; values run from ``minimum`` to
    ``maximum`` in steps of ``step``, in ``unit`` ("std": prior standard deviations, "deg": degrees, "": none)."""

    attribute: str
    index: int
    label: str
    minimum: float
    maximum: float
    step: float
    unit: str

    def clamp(self, value: float) -> float:
        """``value`` limited to [minimum, maximum]."""
        return min(max(value, self.minimum), self.maximum)


def _controls() -> tuple[Control, ...]:
    out = []
    for name in ("shape", "expression", "albedo"):
        out += [Control(name, k, f"{name.capitalize()} {k}", *PCA_RANGE, 0.05, "std") for k in range(N_PCA_CONTROLS)]
    for k, name in enumerate(POSE_NAMES):
        limit = POSE_DEG[name][1] * POSE_WIDEN
        out.append(Control("pose", k, name.capitalize(), -limit, limit, 0.5, "deg"))
    for k, name in enumerate(LIGHT_NAMES):
        out.append(Control("light", k, f"Light {name}", *LIGHT_RANGES[name], LIGHT_STEPS[name], LIGHT_UNITS[name]))
    return tuple(out)


CONTROLS: tuple[Control, ...] = _controls()


def _unit_band1(ambient: float) -> float:
    """|band-1 vector| of a unit-strength white light with DC offset ``ambient`` (directional_light)."""
    return float(directional_light(0.0, 0.0, 1.0, ambient)[1:4].norm())


def light_params(gamma: torch.Tensor) -> tuple[float, float, float, float]:
    """(ambient, azimuth_deg, elevation_deg, strength) of SH ``gamma`` [27] (any float dtype; computed in
    float64): the inverse of :func:`cddfm3d.face3d.lighting.directional_light` (module docstring).

    A light whose band-1 terms are all zero (no direction), or whose DC irradiance ``0.8 + ambient`` is not
    positive, reads as strength 0 from (azimuth 0, elevation 0). Raises ``ValueError`` for another shape or
    non-finite values."""
    g = torch.as_tensor(gamma).detach().to("cpu", torch.float64)
    if g.shape != (27,):
        raise ValueError(f"light_params: gamma must be [27], found {tuple(g.shape)}")
    if not bool(torch.isfinite(g).all()):
        raise ValueError("light_params: gamma has NaN or Inf")
    m = g.reshape(3, 9).mean(0)
    ambient = float(m[0])
    band1 = float(m[1:4].norm())
    if band1 == 0.0 or not ambient > -INIT_AMBIENT:
        return ambient, 0.0, 0.0, 0.0
    elevation, azimuth = light_angles_deg(g)
    return ambient, float(azimuth), float(elevation), band1 / _unit_band1(ambient)


def light_gamma(params) -> torch.Tensor:
    """Gamma [27] float64 of (ambient, azimuth_deg, elevation_deg, strength): ``directional_light(elevation,
    azimuth, strength, ambient)`` in the controls' order."""
    ambient, azimuth, elevation, strength = (float(v) for v in params)
    return directional_light(elevation, azimuth, strength, ambient)


def light_target(source_gamma: torch.Tensor, source_params, params) -> torch.Tensor:
    """Target gamma [27] float64: ``source_gamma + light_gamma(params) - light_gamma(source_params)`` (the source's
    tint and second-order terms kept); exactly ``source_gamma`` (as float64) when ``params == source_params``."""
    g = torch.as_tensor(source_gamma).detach().to("cpu", torch.float64).reshape(27)
    if tuple(float(v) for v in params) == tuple(float(v) for v in source_params):
        return g.clone()
    return g + (light_gamma(params) - light_gamma(source_params))


__all__ = ["CONTROLS", "Control", "light_gamma", "light_params", "light_target", "LIGHT_NAMES",
           "POSE_NAMES", "N_PCA_CONTROLS"]
