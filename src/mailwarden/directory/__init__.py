"""The user directory: address (or alias) → account with its login name.

Backends live in their own modules and all satisfy :class:`~mailwarden.directory.base.Directory`.
:func:`open_directory` is the one place that maps a site's ``[directory]`` section to a backend.
"""

from mailwarden.directory.base import Account, Directory
from mailwarden.directory.factory import open_directory

__all__ = ["Account", "Directory", "open_directory"]
