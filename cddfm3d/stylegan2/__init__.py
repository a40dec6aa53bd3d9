"""StyleGAN2 in pure PyTorch with StyleSpace as a first-class interface, and checkpoint I/O.

    G = load_generator("ffhq.pt")            # rosinality .pt, NVIDIA .pkl or our safetensors format
    w = G.mapping(z, truncation_psi=0.7)      # [B, w_dim]
    styles = G.w_to_styles(w)                 # StyleSpace: list of [B, C_l]
    img = G.synthesis_from_styles(styles)     # == G.synthesis(w)
"""
from ..assets import register_kind
from .checkpoints import CheckpointError, load_discriminator, load_generator, save_discriminator, save_generator
from .discriminator import Discriminator
from .generator import Generator, SynthesisNetwork, default_channels
from .stylespace import (StyleLayer, StyleStats, channel_address, channel_sensitivity, edit_channel, flat_index,
                         flatten_styles, layer_table, parse_channel_id, style_stats, top_channels, unflatten_styles)

register_kind("stylegan2.Generator", load_generator)  # asset kind: cddfm3d.assets.load reads it
register_kind("stylegan2.Discriminator", load_discriminator)

__all__ = ["Generator", "SynthesisNetwork", "Discriminator", "default_channels", "load_generator", "save_generator",
           "load_discriminator", "save_discriminator", "CheckpointError", "StyleLayer", "StyleStats",
           "flatten_styles", "unflatten_styles", "flat_index", "channel_address", "parse_channel_id", "layer_table",
           "style_stats", "edit_channel", "channel_sensitivity", "top_channels"]
