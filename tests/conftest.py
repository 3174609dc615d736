import os
import sys
from pathlib import Path

import pytest

# tests load only the plugins they ask for: nothing from ~/.config or /etc, no entry points
os.environ.setdefault("ISHOWTTS_DISABLE_PLUGIN_AUTOLOAD", "1")
# an event or field missing from the catalogue (ishowttsd/events.py) raises, here and in the
# daemons the tests start (they inherit the environment)
os.environ.setdefault("ISHOWTTS_STRICT_EVENTS", "1")

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory, monkeypatch):
    # the daemon journals paid speech under $XDG_STATE_HOME; each test (and the daemons it
    # starts, which inherit the environment) gets its own, never the user's real one
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state")))
