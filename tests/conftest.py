import os
import sys
from pathlib import Path

import pytest

# tests load only the plugins they ask for: nothing from ~/.config or /etc, no entry points
os.environ.setdefault("ISHOWTTS_DISABLE_PLUGIN_AUTOLOAD", "1")

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def anyio_backend():
    return "asyncio"
