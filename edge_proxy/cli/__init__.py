"""The ``edge-proxy`` command line."""

from edge_proxy.cli.main import main

__all__ = ["main"]
