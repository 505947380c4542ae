"""``python -m tinygpt report|claims|decoding-report|export ...``: the commands of
:mod:`tinygpt.cli.commands` (train.py, generate.py and eval.py are scripts of their own)."""

import sys

from tinygpt.cli.commands import main

if __name__ == "__main__":
    sys.exit(main())
