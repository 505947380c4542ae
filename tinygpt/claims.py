"""``python -m tinygpt.claims``: train the runs the TinyGPT notebook's claims need and write the
results page (tinygpt.analysis.claims)."""

import sys

from tinygpt.analysis.claims import main

if __name__ == "__main__":
    sys.exit(main())
