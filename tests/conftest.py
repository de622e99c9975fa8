"""The test suite, in two layers.

* ``tests/unit/``: the pure layers (wire, config, core, driver declarations); no event loop, no
  sockets, no subprocesses, no ptys. Its conftest fails a test that tries one.
* ``tests/integration/``: real sockets, ptys and processes; the engine and the daemon on an
  event loop.

Shared pure helpers live in :mod:`tests.builders` (config trees, Gateway frames) and
``tests/configs/`` (the broken config files and their expected errors).
"""
