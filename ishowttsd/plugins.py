"""The plugin manager: finds and loads plugins, isolates the broken ones, keeps the registries.

Loading order: internal plugins (the engines), the built-in source and sink plugins (files in
the repo's `plugins/sources` and `plugins/sinks`, shipped inside the wheel), modules named by
the `ishowtts` entry-point group, then `*.py` files in the drop-in folders. pluggy isolates
nothing, so each plugin is loaded and called in its own try/except: a broken one is reported
and skipped, and the daemon goes on (unless `strict`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import stat
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from ishowttsd import hookspecs
from ishowttsd.engines.base import Engine
from ishowttsd.sink import Sink
from ishowttsd.source import Source

log = logging.getLogger("ishowttsd.plugins")

ENTRY_POINT_GROUP = "ishowtts"
# like pytest's PYTEST_DISABLE_PLUGIN_AUTOLOAD: tests and debugging load only what is asked
DISABLE_AUTOLOAD_ENV = "ISHOWTTS_DISABLE_PLUGIN_AUTOLOAD"

INTERNAL_PLUGINS = ("ishowttsd.engines",)
_PACKAGE_DIR = Path(__file__).resolve().parent


def builtin_plugin_dir() -> Path:
    """Where the built-in plugin files are: inside the wheel, or the checkout's `plugins/`."""
    installed = _PACKAGE_DIR / "_builtin_plugins"
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parent / "plugins"


def checkout_dropin_dir() -> Path | None:
    """The repo's own `plugins/` folder, when running from a checkout."""
    d = _PACKAGE_DIR.parent / "plugins"
    return d if (d / "sources").is_dir() and not (_PACKAGE_DIR / "_builtin_plugins").is_dir() else None


def default_dropin_dirs() -> list[Path]:
    dirs = []
    repo = checkout_dropin_dir()
    if repo:
        dirs.append(repo)
    dirs.append(Path("/etc/ishowtts/plugins"))
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    dirs.append(Path(xdg) / "ishowtts" / "plugins")
    return dirs


class PluginRefused(Exception):
    """A plugin file or folder is unsafe to load."""


@dataclass
class PluginRecord:
    name: str
    origin: str  # internal | builtin | entrypoint | file
    path: str | None = None
    state: str = "loaded"  # loaded | broken | refused
    error: str | None = None
    provides: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "origin": self.origin,
            "path": self.path,
            "state": self.state,
            "error": self.error,
            "provides": self.provides,
        }


def check_not_writable_by_others(path: Path) -> None:
    """Refuse a file or folder that a user other than its owner could change."""
    st = path.stat()
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "everyone" if st.st_mode & stat.S_IWOTH else "its group"
        raise PluginRefused(
            f"{path} is writable by {who}; anyone who can write it could run code as this daemon. "
            f"Fix with: chmod go-w {path}"
        )
    if st.st_uid not in (0, os.getuid()):
        raise PluginRefused(f"{path} belongs to uid {st.st_uid}, not to root or this user (uid {os.getuid()})")


def load_module_from_path(name: str, path: Path) -> ModuleType:
    """Import a .py file as module `name` (reused if already imported from the same file)."""
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == str(path):
        return existing
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def load_builtin(relpath: str) -> ModuleType:
    """Import a built-in plugin module, e.g. `load_builtin("sources/replay")`."""
    path = builtin_plugin_dir() / f"{relpath}.py"
    return load_module_from_path("ishowtts_builtin." + relpath.replace("/", "."), path)


class PluginManager:
    """Loads plugins and holds what they registered: source, sink and engine classes."""

    def __init__(self, strict: bool = False) -> None:
        self.pm = pluggy.PluginManager("ishowtts")
        self.pm.add_hookspecs(hookspecs)
        self.strict = strict
        self.records: list[PluginRecord] = []
        self.sources: dict[str, type[Source]] = {}
        self.sinks: dict[str, type[Sink]] = {}
        self.engines: dict[str, type[Engine]] = {}
        self._modules: list[tuple[PluginRecord, Any]] = []

    # -- loading -------------------------------------------------------------------------

    def load_all(self, extra_dirs: list[Path] = (), autoload: bool | None = None) -> None:
        """Load every plugin in the documented order and collect their registrations."""
        if autoload is None:
            autoload = not os.environ.get(DISABLE_AUTOLOAD_ENV)
        for modname in INTERNAL_PLUGINS:
            self._add(PluginRecord(modname, "internal"), lambda m=modname: importlib.import_module(m))
        bdir = builtin_plugin_dir()
        for sub in ("sources", "sinks"):
            for path in sorted((bdir / sub).glob("*.py")):
                if path.name.startswith("_"):
                    continue
                rel = f"{sub}/{path.stem}"
                self._add(PluginRecord(rel, "builtin", str(path)), lambda r=rel: load_builtin(r))
        if autoload:
            for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                self._add(PluginRecord(ep.name, "entrypoint", ep.value), ep.load)
        for d in extra_dirs:
            if not Path(d).expanduser().is_dir():
                # a folder the config names must exist: say so instead of silently loading nothing
                self._broken(PluginRecord(str(d), "file", str(d)),
                             FileNotFoundError(f"plugin folder {d} (from [daemon] plugin_dirs) does not exist"))  # fmt: skip
        dirs = (default_dropin_dirs() if autoload else []) + [Path(d) for d in extra_dirs]
        seen: set[Path] = set()
        for d in dirs:
            d = d.expanduser()
            if d in seen or not d.is_dir():
                continue
            seen.add(d)
            self.load_dir(d)
        self.collect()

    def load_dir(self, d: Path) -> None:
        try:
            check_not_writable_by_others(d)
        except PluginRefused as e:
            self._refuse(PluginRecord(str(d), "file", str(d)), e)
            return
        for path in sorted(d.glob("*.py")):
            if path.name.startswith("_"):
                continue
            rec = PluginRecord(path.stem, "file", str(path))
            try:
                check_not_writable_by_others(path)
            except PluginRefused as e:
                self._refuse(rec, e)
                continue
            modname = f"ishowtts_plugins.{path.stem}"
            if modname in sys.modules and getattr(sys.modules[modname], "__file__", None) != str(path):
                modname = f"ishowtts_plugins.{path.stem}_{abs(hash(str(path))):x}"
            self._add(rec, lambda p=path, n=modname: load_module_from_path(n, p))

    def add_module(self, module: Any, name: str | None = None, origin: str = "internal") -> None:
        """Register an already-imported plugin module or object (tests, embedding)."""
        self._add(PluginRecord(name or getattr(module, "__name__", repr(module)), origin), lambda: module)

    def _add(self, rec: PluginRecord, load) -> None:
        try:
            module = load()
            self.pm.register(module, name=f"{rec.origin}:{rec.name}")
        except (Exception, SystemExit) as e:  # a plugin calling sys.exit() at import is broken, not fatal
            self._broken(rec, e)
            return
        self.records.append(rec)
        self._modules.append((rec, module))

    def _broken(self, rec: PluginRecord, e: BaseException) -> None:
        rec.state = "broken"
        rec.error = f"{type(e).__name__}: {e}"
        if rec not in self.records:
            self.records.append(rec)
        log.warning("plugin %s (%s) is broken and was skipped: %s", rec.name, rec.path or rec.origin, rec.error)
        log.debug("%s", traceback.format_exc())
        if self.strict:
            raise e

    def _refuse(self, rec: PluginRecord, e: PluginRefused) -> None:
        rec.state = "refused"
        rec.error = str(e)
        self.records.append(rec)
        log.warning("plugin %s refused: %s", rec.name, e)
        if self.strict:
            raise e

    # -- registration ----------------------------------------------------------------------

    def collect(self) -> None:
        """Call every plugin's registration hooks, one plugin at a time."""
        by_name = {f"{rec.origin}:{rec.name}": rec for rec, _ in self._modules}
        hooks = [
            ("ishowtts_register_engines", self.engines, Engine, "name"),
            ("ishowtts_register_sources", self.sources, Source, "type"),
            ("ishowtts_register_sinks", self.sinks, Sink, "type"),
        ]
        for hookname, registry, base, attr in hooks:
            for impl in getattr(self.pm.hook, hookname).get_hookimpls():
                rec = by_name.get(impl.plugin_name)
                if rec is None or rec.state != "loaded":
                    continue
                added: list[str] = []

                def register(cls, registry=registry, base=base, attr=attr, rec=rec, added=added) -> None:
                    if not (isinstance(cls, type) and issubclass(cls, base)):
                        raise TypeError(f"register() wants a subclass of {base.__name__}, got {cls!r}")
                    key = getattr(cls, attr, None)
                    if not isinstance(key, str) or not key:
                        raise TypeError(f"{cls.__name__} needs a class attribute {attr!r} (a non-empty string)")
                    if key in registry and registry[key] is not cls:
                        raise ValueError(f"{base.__name__.lower()} {key!r} is already provided by another plugin")
                    registry[key] = cls
                    added.append(f"{base.__name__.lower()}:{key}")

                try:
                    impl.function(register=register)
                except (Exception, SystemExit) as e:
                    for item in added:
                        registry.pop(item.split(":", 1)[1], None)
                    self._broken(rec, e)
                    continue
                rec.provides.extend(added)

    @property
    def broken(self) -> list[PluginRecord]:
        return [r for r in self.records if r.state != "loaded"]

    def summary(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.records]
