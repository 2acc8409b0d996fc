"""`python -m bigrag_mcp` runs the command line."""

from bigrag_mcp.cli import run

run()
