"""Static directory: people and groups from a YAML file, for demos and small teams.

See ``static.py`` for behaviour (reload, fail-closed) and ``schema.py`` for the format;
``manifests/directory.example.yaml`` is a commented example.
"""

from adapters.directory.schema import DirectoryFile, GroupEntry, PersonEntry
from adapters.directory.static import StaticDirectory, parse_directory

__all__ = ["DirectoryFile", "GroupEntry", "PersonEntry", "StaticDirectory", "parse_directory"]
