"""The three errors of cddfm3d.assets: missing, invalid, and both (a shipped file that fails its checksum)."""
from __future__ import annotations


class AssetError(FileNotFoundError):
    """An asset is missing: not configured, not on disk, or not in the manifest. The message says what to do."""


class AssetValidationError(ValueError):
    """An asset file (or the manifest, or the config file) exists but its content is wrong."""


class AssetIntegrityError(AssetError, AssetValidationError):
    """A shipped file's size or sha256 differs from the manifest: the expected asset is missing *and* the file
    on disk is wrong, so both ``except AssetError`` and ``except AssetValidationError`` catch it."""


__all__ = ["AssetError", "AssetValidationError", "AssetIntegrityError"]
