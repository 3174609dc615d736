"""The built-in source and sink plugins, importable as ``ishowttsd.builtin_plugins.<sources|sinks>.<name>``.

Their files live in the repo's ``plugins/sources`` and ``plugins/sinks``, the layout a plugin
author sees. The wheel build copies those two folders into this package; in a checkout this
package's ``__path__`` also covers the checkout's ``plugins/`` folder, so the same import works
from both, and a built-in that is a package folder uses relative imports like any package.
"""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent
_CHECKOUT = _HERE.parent.parent / "plugins"

# the checkout's `plugins/` folder when running from a checkout (None inside an installed wheel)
CHECKOUT_PLUGINS: Path | None = None
if not (_HERE / "sources").is_dir() and (_CHECKOUT / "sources").is_dir():
    CHECKOUT_PLUGINS = _CHECKOUT
    __path__.append(str(_CHECKOUT))  # noqa: F821 (set by the import system for every package)
