"""Datasets read from disk: one clear error, before anything is written, when their files are missing."""

from pathlib import Path

from testbed.errors import ConfigError


def require_files(dataset: str, root: str, files: list[str], source: str) -> None:
    """Raise a ConfigError naming the files the loader reads under `root` and where to get them,
    if any is missing. The loaders' own errors come later and would name neither."""
    folder = Path(root).resolve()
    if not all((folder / f).exists() for f in files):
        raise ConfigError(f"root: {dataset} is not in {folder}: expected {', '.join(files)} there; "
                          f"set download to true (--data.download true) to fetch it from {source}")
