import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The protocol core is imported from the source tree, exactly as it is frozen.
sys.path.insert(0, str(ROOT / "lib"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))  # sim/

import logging  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _no_unhandled_asyncio_errors(caplog, request):
    """An exception escaping a callback or task is logged by asyncio, not raised: fail
    the test that caused it (unless the test names it a library's known one, with
    @pytest.mark.asyncio_error_allowed(text))."""
    allowed = [m.args[0] for m in request.node.iter_markers("asyncio_error_allowed")]
    caplog.set_level(logging.ERROR, logger="asyncio")
    yield
    errors = [r.getMessage() for r in caplog.get_records("call")
              if r.name == "asyncio" and r.levelno >= logging.ERROR]
    assert not [e for e in errors if not any(a in e for a in allowed)], errors


@pytest.fixture
def mosquitto(tmp_path):
    """A mosquitto broker of the test's own, on loopback: its port."""
    from sim.broker import Mosquitto

    broker = Mosquitto(tmp_path)
    yield broker.port
    broker.stop()
