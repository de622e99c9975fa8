"""``python -m edge_proxy`` runs the command line."""

import sys

from edge_proxy.cli.main import main

sys.exit(main())
