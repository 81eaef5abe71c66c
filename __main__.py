"""`python -m fastsam_stream` is the `fastsam-stream` command."""

import sys

from .cli import main

if __name__ == "__main__":  # importing the module (a tool listing modules) runs nothing
    sys.exit(main())
