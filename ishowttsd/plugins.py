"""The plugin manager: finds and loads plugins, isolates the broken ones, keeps the registries.

Loading order: the modules named in :data:`DEFAULT_PLUGINS` (the engines, the first text
rewrite, then the built-in
sources and sinks, which live in the repo's `plugins/sources` and `plugins/sinks` and ship
inside the wheel as :mod:`ishowttsd.builtin_plugins`), modules named by the `ishowtts`
entry-point group, then the drop-ins: `*.py` files and package folders (with an `__init__.py`)
in the plugin folders. pluggy isolates nothing, so each plugin is loaded and called in its own
try/except: a broken one is reported and skipped, and the daemon goes on (unless `strict`).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import os
import stat
import sys
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from ishowttsd import builtin_plugins, hookspecs
from ishowttsd.engines.base import Engine
from ishowttsd.sink import Sink
from ishowttsd.source import Source

log = logging.getLogger("ishowttsd.plugins")

ENTRY_POINT_GROUP = "ishowtts"
# like pytest's PYTEST_DISABLE_PLUGIN_AUTOLOAD: tests and debugging load only what is asked
DISABLE_AUTOLOAD_ENV = "ISHOWTTS_DISABLE_PLUGIN_AUTOLOAD"

BUILTIN_PACKAGE = builtin_plugins.__name__
# what ships with the daemon, as importable modules (a plugin file or package folder each);
# a test fails when a file or folder in plugins/sources or plugins/sinks is missing here
DEFAULT_PLUGINS = (
    "ishowttsd.engines",
    "ishowttsd.pronounce",  # the first text rewrite: full-width letters and digits folded
    f"{BUILTIN_PACKAGE}.sources.bilibili",
    f"{BUILTIN_PACKAGE}.sources.replay",
    f"{BUILTIN_PACKAGE}.sources.twitch",
    f"{BUILTIN_PACKAGE}.sources.youtube",
    f"{BUILTIN_PACKAGE}.sinks.alsa",
    f"{BUILTIN_PACKAGE}.sinks.browser",
    f"{BUILTIN_PACKAGE}.sinks.file",
    f"{BUILTIN_PACKAGE}.sinks.history",
    f"{BUILTIN_PACKAGE}.sinks.obs",
)
BUILTIN_KINDS = ("sources", "sinks")
# drop-in plugins are imported as submodules of this name (a package of their own each)
DROPIN_PACKAGE = "ishowtts_plugins"


def default_dropin_dirs() -> list[Path]:
    """The checkout's `plugins/` folder (when running from one), then the system and user folders."""
    dirs = []
    if builtin_plugins.CHECKOUT_PLUGINS is not None:
        dirs.append(builtin_plugins.CHECKOUT_PLUGINS)
    dirs.append(Path("/etc/ishowtts/plugins"))
    xdg = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    dirs.append(Path(xdg) / "ishowtts" / "plugins")
    return dirs


def builtin_folders() -> set[Path]:
    """The folders that hold the built-ins (`plugins/sources`, `plugins/sinks`): never drop-ins."""
    return {(Path(p) / kind).resolve() for p in builtin_plugins.__path__ for kind in BUILTIN_KINDS}


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


def check_not_writable_by_others(path: Path, fix: str | None = None) -> None:
    """Refuse a file or folder that a user other than its owner could change.

    `fix` names what to repair when `path` is part of a larger whole (a package plugin's file).
    """
    st = path.stat()
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        who = "everyone" if st.st_mode & stat.S_IWOTH else "its group"
        raise PluginRefused(
            f"{path} is writable by {who}; anyone who can write it could run code as this daemon. "
            f"Fix with: chmod {'-R go-w ' + fix if fix else 'go-w ' + str(path)}"
        )
    if st.st_uid not in (0, os.getuid()):
        raise PluginRefused(
            f"{path} belongs to uid {st.st_uid}, not to root or this user (uid {os.getuid()}); "
            f"give it to one of them: chown {'-R ' if fix else ''}{os.getuid()} {fix or path}"
        )


def check_package_not_writable_by_others(folder: Path) -> None:
    """Refuse a package plugin if its folder or anything in it (cached bytecode included)
    could be changed by another user."""
    seen: set[tuple[int, int]] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        st = os.stat(root)
        if (st.st_dev, st.st_ino) in seen:  # a link back up the tree
            dirs.clear()
            continue
        seen.add((st.st_dev, st.st_ino))
        check_not_writable_by_others(Path(root), fix=str(folder))
        for name in files:
            check_not_writable_by_others(Path(root) / name, fix=str(folder))


def load_module_from_path(name: str, path: Path, package: bool = False) -> ModuleType:
    """Import a .py file (or a package folder's `__init__.py`, with `package=True`) as module
    `name`; reused if already imported from the same file. A package's relative imports work."""
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == str(path):
        return existing
    locations = [str(path.parent)] if package else None
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=locations)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            sys.modules.pop(loaded, None)
        raise
    return module


def _dropin_parent() -> ModuleType:
    """The package drop-ins are imported into, so `ishowtts_plugins.<name>` is a real module path."""
    parent = sys.modules.get(DROPIN_PACKAGE)
    if parent is None:
        parent = ModuleType(DROPIN_PACKAGE, "The drop-in plugins, one submodule each (loaded by ishowttsd.plugins).")
        parent.__path__ = []  # submodules are loaded by file, never searched for
        sys.modules[DROPIN_PACKAGE] = parent
    return parent


def load_builtin(relpath: str) -> ModuleType:
    """Import a built-in plugin module, e.g. `load_builtin("sources/replay")`."""
    return importlib.import_module(f"{BUILTIN_PACKAGE}.{relpath.replace('/', '.')}")


class PluginManager:
    """Loads plugins and holds what they registered: source, sink and engine classes."""

    def __init__(self, strict: bool = False, load_timeout_s: float = 10.0) -> None:
        self.pm = pluggy.PluginManager("ishowtts")
        self.pm.add_hookspecs(hookspecs)
        self.strict = strict
        # a plugin that does not finish importing (or registering) in time is broken, not a hang
        self.load_timeout_s = load_timeout_s
        self._module_names: dict[str, str] = {}  # module name -> plugin name, to name a stuck plugin
        self.records: list[PluginRecord] = []
        self.sources: dict[str, type[Source]] = {}
        self.sinks: dict[str, type[Sink]] = {}
        self.engines: dict[str, type[Engine]] = {}
        self._modules: list[tuple[PluginRecord, Any]] = []
        # (plugin name, function, its argument names) of each ishowtts_rewrite_text, in load order
        self.rewriters: list[tuple[str, Any, tuple[str, ...]]] = []

    # -- loading -------------------------------------------------------------------------

    def load_all(self, extra_dirs: list[Path] = (), autoload: bool | None = None) -> None:
        """Load every plugin in the documented order and collect their registrations."""
        if autoload is None:
            autoload = not os.environ.get(DISABLE_AUTOLOAD_ENV)
        for modname in DEFAULT_PLUGINS:
            if modname.startswith(BUILTIN_PACKAGE + "."):
                rec = PluginRecord(modname.removeprefix(BUILTIN_PACKAGE + ".").replace(".", "/"), "builtin")
            else:
                rec = PluginRecord(modname, "internal")
            self._add(rec, lambda m=modname: importlib.import_module(m))
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
        """Load the drop-ins of one folder: `*.py` files and package folders with an `__init__.py`."""
        try:
            check_not_writable_by_others(d)
        except PluginRefused as e:
            self._refuse(PluginRecord(str(d), "file", str(d)), e)
            return
        skip = builtin_folders()
        for path in sorted(d.iterdir()):
            if path.name.startswith(("_", ".")):
                continue
            package = path.is_dir()
            if package and (not (path / "__init__.py").is_file() or path.resolve() in skip):
                continue
            if not package and path.suffix != ".py":
                continue
            name = path.name if package else path.stem
            rec = PluginRecord(name, "file", str(path))
            try:
                if package:
                    check_package_not_writable_by_others(path)
                else:
                    check_not_writable_by_others(path)
            except PluginRefused as e:
                self._refuse(rec, e)
                continue
            init = path / "__init__.py" if package else path
            modname = f"{DROPIN_PACKAGE}.{name}"
            if modname in sys.modules and getattr(sys.modules[modname], "__file__", None) != str(init):
                modname = f"{DROPIN_PACKAGE}.{name}_{abs(hash(str(path))):x}"
            _dropin_parent()
            self._add(rec, lambda p=init, n=modname, pk=package: load_module_from_path(n, p, package=pk))

    def add_module(self, module: Any, name: str | None = None, origin: str = "internal") -> None:
        """Register an already-imported plugin module or object (tests, embedding)."""
        self._add(PluginRecord(name or getattr(module, "__name__", repr(module)), origin), lambda: module)

    def _add(self, rec: PluginRecord, load) -> None:
        try:
            module = self._in_time(load, rec, "loading")
            self.pm.register(module, name=f"{rec.origin}:{rec.name}")
            rec.path = rec.path or getattr(module, "__file__", None)
        except (Exception, SystemExit) as e:  # a plugin calling sys.exit() at import is broken, not fatal
            self._broken(rec, e)
            return
        self.records.append(rec)
        self._modules.append((rec, module))
        name = getattr(module, "__name__", None)
        if isinstance(name, str):
            self._module_names[name] = rec.name

    def _in_time(self, fn, rec: PluginRecord, what: str):
        """Run a plugin's code (its import, its registration hook) with a deadline: in a
        thread, so that one that blocks or spins is reported as broken and the daemon goes on.
        The thread of a plugin that never finishes is left behind (Python cannot stop it)."""
        result: dict[str, Any] = {}

        def work() -> None:
            try:
                result["value"] = fn()
            except BaseException as e:  # handed to the caller as if raised there
                result["error"] = e

        t = threading.Thread(target=work, name=f"plugin-{what}:{rec.name}", daemon=True)
        t.start()
        t.join(self.load_timeout_s)
        if t.is_alive():
            raise TimeoutError(
                f"{what} did not finish within {self.load_timeout_s:g} s ([daemon] plugin_load_timeout_s): it may wait on "
                f"the network or a lock, or loop forever; it was skipped. Fix the plugin or move it out of the plugin folder"
            )  # fmt: skip
        if "error" in result:
            raise result["error"]
        return result.get("value")

    def plugin_of(self, module_name: str) -> str | None:
        """The plugin a module belongs to (the module itself, or one of its submodules)."""
        name = module_name
        while name:
            if name in self._module_names:
                return self._module_names[name]
            name = name.rpartition(".")[0]
        return None

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
                closed = threading.Event()  # a hook that missed its deadline may register nothing later

                def register(cls, registry=registry, base=base, attr=attr, rec=rec, added=added, closed=closed) -> None:
                    if closed.is_set():
                        raise RuntimeError("too late: this plugin's registration already timed out")
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
                    self._in_time(lambda f=impl.function, r=register: f(register=r), rec, "registration")
                except (Exception, SystemExit) as e:
                    closed.set()
                    for item in added:
                        registry.pop(item.split(":", 1)[1], None)
                    self._broken(rec, e)
                    continue
                rec.provides.extend(added)
        self._collect_rewriters(by_name)

    def _collect_rewriters(self, by_name: dict[str, PluginRecord]) -> None:
        # pluggy calls the last registered first; a rewrite chain must run in the order the
        # streamer set up (load order), so we keep the list and call it ourselves
        order = {f"{rec.origin}:{rec.name}": i for i, (rec, _) in enumerate(self._modules)}
        impls = [impl for impl in self.pm.hook.ishowtts_rewrite_text.get_hookimpls()
                 if by_name.get(impl.plugin_name) is not None and by_name[impl.plugin_name].state == "loaded"]  # fmt: skip
        impls.sort(key=lambda impl: order.get(impl.plugin_name, len(order)))
        # like pluggy, hand each implementation only the arguments it names
        self.rewriters = [(by_name[impl.plugin_name].name, impl.function, tuple(impl.argnames)) for impl in impls]
        for impl in impls:
            rec = by_name[impl.plugin_name]
            if "rewrite:text" not in rec.provides:
                rec.provides.append("rewrite:text")

    def rewrite_text(self, text: str, message: Any, language: str, on_error) -> str:
        """Run every plugin's `ishowtts_rewrite_text` on `text`, in load order; one that raises
        or returns a non-string is handed to `on_error(plugin, exception)` and skipped."""
        for name, fn, argnames in self.rewriters:
            args = {"text": text, "message": message, "language": language}
            try:
                out = fn(**{a: args[a] for a in argnames})
            except Exception as e:
                on_error(name, e)
                continue
            if out is None:
                continue
            if not isinstance(out, str):
                on_error(name, TypeError(f"returned {type(out).__name__}, not a string or None"))
                continue
            text = out
        return text

    @property
    def broken(self) -> list[PluginRecord]:
        return [r for r in self.records if r.state != "loaded"]

    def summary(self) -> list[dict[str, Any]]:
        return [r.to_dict() for r in self.records]
