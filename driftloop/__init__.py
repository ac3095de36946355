"""driftloop: streaming MLOps on Kafka.

Everything installed lives under this one import name:

- ``driftloop.shared``: the common library (the checkout's ``shared/``);
- ``driftloop.services.<name>``: the five services (``services/``);
- ``driftloop.schemas``: the Avro schemas, package data (``schemas/``);
- ``driftloop.cli`` (one module per subcommand in ``driftloop.commands``) and the other
  tools beside the services: the command line, demo, bench, replay, summary and report,
  the process runner and the lifecycle simulation (this folder, ``driftloop/``).

The mapping of folders to import names is ``[tool.setuptools] package-dir`` in
pyproject.toml.
"""
