"""benchmarks/ is run from a checkout (`python -m benchmarks.gateway_bench`) and is not an installed
package, so its tests put the repository root on sys.path."""

from __future__ import annotations

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
