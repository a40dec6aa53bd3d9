"""Cross-domain editing (CDDFM3D §3.4, "Out-of-domain face manipulation"): the whole pipeline as one call.

    out-of-domain image --project in G_domain--> w+ / s --shared affines--> s --T--> P_s
        --edit request--> P_t --F^i on S^i--> s_g --G_domain.synthesis_from_styles(noise of the projection)--> edit

Because latent-consistent fine-tuning left ``w -> s`` untouched, the human-trained T and F^i read and write the
domain generator's s exactly as the human generator's (:mod:`cddfm3d.adapt.finetuning`). The same s decoded by the
human generator gives the image's "human counterpart", before and after the edit. The paper never released this
inversion-to-edit path; the official code has no inversion at all.

    ed = CrossDomainEditor.load("mini", "toon")
    r = ed.edit(toon_images, {"pose": {"delta": {1: 0.3}}})     # yaw + 0.3 rad
    r.image, r.reconstruction, r.human, r.human_edited          # [B, 3, H, W] in [-1, 1]
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..editing.face_editor import FaceEditor
from .projection import DEFAULT_STEPS, ProjectionResult, project


@dataclass
class CrossDomainResult:
    """What :meth:`CrossDomainEditor.edit` returns (tensors on the generators' device).

    Attributes:
        projection: the inversion of the input (:class:`~cddfm3d.adapt.projection.ProjectionResult`).
        styles: [B, D] the input's flat StyleSpace vector (``projection.styles``).
        coeffs: [B, 257] P_s = T(styles), the input's 3DMM reading through the latent.
        target_coeffs: [B, 257] P_t: ``coeffs`` with the requested edits applied.
        edited_styles: [B, D] s_g after the F^i.
        reconstruction, image: [B, 3, H, W] in [-1, 1]: the domain generator's image of ``styles`` (the
            projection) and of ``edited_styles`` (the edit), both with the projection's noise.
        human, human_edited: the same two styles through the human generator (same noise).
    """

    projection: ProjectionResult
    styles: torch.Tensor
    coeffs: torch.Tensor
    target_coeffs: torch.Tensor
    edited_styles: torch.Tensor
    reconstruction: torch.Tensor
    image: torch.Tensor
    human: torch.Tensor
    human_edited: torch.Tensor


class CrossDomainEditor:
    """The human world's T and F^i (a :class:`~cddfm3d.editing.FaceEditor` on the human generator) with a
    generator fine-tuned to another domain.

    Raises ``ValueError`` when the domain generator's architecture differs from the human one's."""

    def __init__(self, editor: FaceEditor, G_domain):
        if G_domain.config != editor.G.config:
            raise ValueError(f"CrossDomainEditor: the domain generator's architecture {G_domain.config} differs "
                             f"from the human generator's {editor.G.config}")
        self.editor, self.G_domain = editor, G_domain.eval()
        self.domain_editor = FaceEditor(self.G_domain, editor.T, editor.manipulators)

    @classmethod
    def load(cls, world: str = "mini", domain: str = "toon", device=None, generator=None) -> CrossDomainEditor:
        """The shipped ``<world>`` networks and ``<world>/generator_<domain>`` (or ``generator``: any fine-tuned
        generator, e.g. an ablation). Raises the asset errors of :func:`cddfm3d.assets.load`."""
        from .. import assets

        G_domain = assets.load(f"{world}/generator_{domain}", device) if generator is None else generator
        return cls(FaceEditor.load(world, device), G_domain)

    @property
    def device(self) -> torch.device:
        return self.editor.device

    def invert(self, images: torch.Tensor, space: str = "w+", steps: int = DEFAULT_STEPS, **kwargs
               ) -> ProjectionResult:
        """:func:`cddfm3d.adapt.project` of ``images`` [B, 3, H, W] in [-1, 1] into the domain generator."""
        return project(self.G_domain, images.to(self.device), space=space, steps=steps, **kwargs)

    def decode(self, G, styles: torch.Tensor, noise: list[torch.Tensor]) -> torch.Tensor:
        """``G``'s image [B, 3, H, W] in [-1, 1] of flat ``styles`` with the noise maps ``noise``."""
        with torch.no_grad():
            return G.synthesis_from_styles(G.unflatten_styles(styles), noise=list(noise)).clamp(-1, 1)

    @torch.no_grad()
    def edit(self, images_or_projection, edits: Mapping[str, Mapping], space: str = "w+",
             steps: int = DEFAULT_STEPS, **project_kwargs) -> CrossDomainResult:
        """Invert (unless a :class:`ProjectionResult` is given), edit and decode (module docstring). ``edits`` as
        :meth:`cddfm3d.editing.FaceEditor.edit` (``{attribute: {"target": ..., "delta": ...}}``, values in 3DMM
        units, deltas against P_s = T(s)). Raises its ``ValueError`` for a bad edit."""
        if isinstance(images_or_projection, ProjectionResult):
            proj = images_or_projection
        else:
            with torch.enable_grad():
                proj = self.invert(images_or_projection, space=space, steps=steps, **project_kwargs)
        s = proj.styles.to(self.device)
        P_s = self.editor.predict(s)
        s_g = self.editor.edit(s, edits)
        target = self.editor.target_coeffs(s, edits, P_s)
        noise = [n.to(self.device) for n in proj.noise]
        return CrossDomainResult(
            projection=proj, styles=s, coeffs=P_s, target_coeffs=target, edited_styles=s_g,
            reconstruction=self.decode(self.G_domain, s, noise), image=self.decode(self.G_domain, s_g, noise),
            human=self.decode(self.editor.G, s, noise), human_edited=self.decode(self.editor.G, s_g, noise))


__all__ = ["CrossDomainEditor", "CrossDomainResult"]
