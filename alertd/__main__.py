"""Allow ``python -m alertd``."""

from alertd.cli import main

main()
