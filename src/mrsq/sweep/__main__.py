"""``python -m mrsq.sweep ...``: the same as ``mrsq sweep ...``."""

import sys

from mrsq.sweep import _standalone

sys.exit(_standalone())
