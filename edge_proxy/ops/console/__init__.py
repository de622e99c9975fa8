"""The operator web console: pages to see and try every device, live over Server-Sent Events.

* :mod:`.state` -- :class:`Console`, what the daemon wires in (hooks, buffers, the live tick);
* :mod:`.server` -- the aiohttp application (pages, API, streams, login);
* :mod:`.views` -- each page's data; :mod:`.history`, :mod:`.commands`, :mod:`.logbuffer` --
  the bounded buffers; :mod:`.broadcast` -- the live streams; :mod:`.auth` -- token and sessions.
"""

from edge_proxy.ops.console.server import ConsoleServer
from edge_proxy.ops.console.state import Console

__all__ = ["Console", "ConsoleServer"]
