import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The protocol core is imported from the source tree, exactly as it is frozen.
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))  # sim/
