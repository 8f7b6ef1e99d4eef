"""``python -m robokit.demo``: the same as ``robokit demo``."""

import sys

from robokit.cli import main

main(["demo", *sys.argv[1:]])
