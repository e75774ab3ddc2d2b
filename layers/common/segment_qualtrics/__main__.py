"""``python -m segment_qualtrics <command>``: the one command line (segment_qualtrics/tools/cli.py)."""

import sys

from segment_qualtrics.tools.cli import main

sys.exit(main())
