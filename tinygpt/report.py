"""``python -m tinygpt.report``: the dense-vs-MoE and decoding report (tinygpt.analysis.report)."""

import sys

from tinygpt.analysis.report import main

if __name__ == "__main__":
    sys.exit(main())
