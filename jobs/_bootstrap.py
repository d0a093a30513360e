"""Make `crnn` importable when a job runs from a checkout (`ray job submit --working-dir .`)."""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
