"""The package's one progress bar: ``tqdm.auto`` (a widget in notebooks, text elsewhere) that tqdm's environment
overrides still reach.

tqdm reads ``TQDM_*`` variables (for example ``TQDM_DISABLE=1``, ``TQDM_MININTERVAL=5``) as the *defaults* of its
arguments, so a call that passes ``disable=False`` explicitly would ignore ``TQDM_DISABLE=1``. :func:`progress_bar`
passes ``disable`` only to turn a bar off.
"""
from __future__ import annotations


def progress_bar(*args, enabled: bool = True, **kwargs):
    """A ``tqdm.auto.tqdm(*args, **kwargs)`` bar, or a disabled one when ``enabled`` is false.

    With ``enabled`` true the bar shows unless tqdm's own defaults say otherwise (``TQDM_DISABLE=1`` in the
    environment when tqdm is imported). Raises ``TypeError`` when ``disable`` is passed: use ``enabled``."""
    if "disable" in kwargs:
        raise TypeError("progress_bar: pass enabled=..., not disable=... (an explicit disable=False would override "
                        "TQDM_DISABLE)")
    from tqdm.auto import tqdm
    if not enabled:
        kwargs["disable"] = True
    return tqdm(*args, **kwargs)


__all__ = ["progress_bar"]
