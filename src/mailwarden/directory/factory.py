"""Map a site's ``[directory]`` section to a backend instance."""

from __future__ import annotations

from mailwarden.directory.base import Directory
from mailwarden.directory.embedded import EmbeddedDirectory
from mailwarden.site.model import DirectoryConfig


def open_directory(config: DirectoryConfig) -> Directory:
    """A ready-to-use directory for ``config`` (opening is cheap; connections are lazy)."""
    return EmbeddedDirectory(config.path)
