"""``python main.py`` serves the project for development, as ``tranzit run`` does here.

Options go on to ``tranzit run`` (``python main.py --help``).
"""

import sys
from pathlib import Path

from tranzit.cli import main

if __name__ == "__main__":
    sys.exit(main(["run", "--project", str(Path(__file__).resolve().parent), *sys.argv[1:]]))
