"""`python -m fastsam_stream` is the `fastsam-stream` command."""

import sys

from .cli import main

sys.exit(main())
