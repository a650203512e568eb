"""`python -m omnifuse` runs the command line."""

from omnifuse.cli import main

main()
