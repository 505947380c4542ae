"""``python -m tinygpt.decoding_report CKPT``: decoding strategies compared on one checkpoint
(tinygpt.analysis.decoding_report)."""

import sys

from tinygpt.analysis.decoding_report import main

if __name__ == "__main__":
    sys.exit(main())
