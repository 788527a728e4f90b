"""``python -m relaygraph`` runs the command line."""

import sys

from relaygraph.cli import main

sys.exit(main())
