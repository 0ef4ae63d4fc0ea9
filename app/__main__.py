"""Allow ``python -m segcam``."""

from __future__ import annotations

import sys

from segcam.cli import main

sys.exit(main())
