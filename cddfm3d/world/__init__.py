"""The mini world: coefficient priors, the human, toon and sketch domains, and rendered datasets."""
from .domains import DOMAINS, mini_model, render
from .priors import sample_coeffs

__all__ = ["DOMAINS", "mini_model", "render", "sample_coeffs"]
