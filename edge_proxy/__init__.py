"""edge-proxy: a daemon between a Subway-protocol Gateway and field devices."""

__version__ = "0.1.0"
