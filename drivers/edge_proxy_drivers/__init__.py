"""Built-in edge-proxy drivers, registered through the edge_proxy.drivers entry points."""
