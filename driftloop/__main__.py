"""``python -m driftloop``: the same as the ``driftloop`` command."""

from driftloop.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
