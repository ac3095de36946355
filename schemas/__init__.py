"""The Avro schemas as package data: installed as ``driftloop.schemas``.

One ``.avsc`` per record (namespace ``driftloop``) and ``registry.json``, the file registry
that gives each schema version its id. Read at run time through importlib.resources
(``driftloop.shared.resources.SCHEMA_DIR``); this file only makes the folder a package.
"""
