"""The package's one progress bar: ``tqdm.auto`` (a widget in notebooks, text elsewhere) that tqdm's environment
overrides still reach.

tqdm reads ``TQDM_*`` variables (for example ``TQDM_DISABLE=1``, ``TQDM_MININTERVAL=5``) as the *defaults* of its
arguments when it is imported, so a call that passes ``disable=False`` explicitly would ignore ``TQDM_DISABLE=1``,
and so does the notebook bar of ``tqdm.auto`` whatever the call passes (it turns a missing ``disable`` into
False). :func:`progress_bar` therefore asks tqdm's plain class once whether its environment disables bars, and
passes ``disable`` only to turn a bar off.
"""
from __future__ import annotations

import functools
import io


@functools.cache
def _disabled_by_environment() -> bool:
    """Whether tqdm's environment defaults (``TQDM_DISABLE``, read by tqdm at import) turn bars off."""
    from tqdm.std import tqdm as plain

    probe = plain([], file=io.StringIO())
    disabled = bool(probe.disable)       # read before close(), which disables every bar it closes
    probe.close()
    return disabled


def progress_bar(*args, enabled: bool = True, **kwargs):
    """A ``tqdm.auto.tqdm(*args, **kwargs)`` bar, or a disabled one when ``enabled`` is false or tqdm's environment
    disables bars (``TQDM_DISABLE=1`` when tqdm is imported; tqdm reads any non-empty value as true).

    Raises ``TypeError`` when ``disable`` is passed: use ``enabled``."""
    if "disable" in kwargs:
        raise TypeError("progress_bar: pass enabled=..., not disable=... (an explicit disable=False would override "
                        "TQDM_DISABLE)")
    from tqdm.auto import tqdm

    if not enabled or _disabled_by_environment():
        kwargs["disable"] = True
    return tqdm(*args, **kwargs)


__all__ = ["progress_bar"]
