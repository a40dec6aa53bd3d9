"""sha256 of files, cached per file state, so loading the same shipped file twice in one process hashes it once."""
from __future__ import annotations

import hashlib
from pathlib import Path

# (resolved path, size, mtime_ns) -> sha256 of the content: any rewrite of the file changes the key.
_HASHES: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path) -> str:
    """Lowercase hex sha256 of the file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_sha256(path: Path) -> str:
    """:func:`sha256_file`, remembered for the file's (resolved path, size, mtime) within this process."""
    st = Path(path).stat()  # taken before hashing: a file changed meanwhile gets a new key next time
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def clear_verification_cache() -> None:
    """Forget which files were hashed (for tests and for files edited within the file system's time
    resolution)."""
    _HASHES.clear()


__all__ = ["sha256_file", "cached_sha256", "clear_verification_cache"]
