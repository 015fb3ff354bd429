"""Allow ``python -m alertd``."""

from alertd.start import main

main()
