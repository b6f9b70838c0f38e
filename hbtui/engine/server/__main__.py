"""``python -m hbtui.engine.server``: the same as ``hbtui engine``."""

import sys

from hbtui.engine.server.startup import main

sys.exit(main())
