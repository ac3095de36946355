"""Files the code reads at run time, shipped inside the package as package data.

They are found through :mod:`importlib.resources`, never relative to a source tree, so an
installed wheel, an editable install and a container image all read the same files:

- ``driftloop.schemas``: the Avro schemas, one ``.avsc`` per record, and ``registry.json``
  (the checkout's ``schemas/`` folder);
- ``driftloop.shared`` ``jars/pom.xml``: the pom Maven fetches Apache Kafka's jars from.

driftloop is installed unpacked (a wheel, ``pip install -e .`` or the Docker image), so
each resource is a real file on disk; the paths below are plain :class:`pathlib.Path`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def package_path(package: str, *parts: str) -> Path:
    """The file or folder ``parts`` inside ``package``, as a path on disk."""
    found = resources.files(package).joinpath(*parts)
    if not isinstance(found, Path):
        # A zipped install (zipimport) has no file to hand to fastavro or Maven.
        raise RuntimeError(f"{package}/{'/'.join(parts)} is not a file on disk ({found!r}); install driftloop unpacked")
    return found


SCHEMA_DIR = package_path("driftloop.schemas")
"""The packaged schema folder: the default of the ``schema_dir`` setting."""

KAFKA_POM = package_path("driftloop.shared", "jars", "pom.xml")
"""The pom that pins Apache Kafka's jars (shared/broker.py fetches them with Maven)."""
