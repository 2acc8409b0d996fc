"""`python -m bigrag_mcp` runs the command line."""

import sys

from bigrag_mcp.cli import main

sys.exit(main())
