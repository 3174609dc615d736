import importlib
import sys
import textwrap
from pathlib import Path

import pytest

from ishowttsd import builtin_plugins, hookspecs
from ishowttsd.plugins import DEFAULT_PLUGINS, PluginManager, PluginRefused, load_builtin

REPO_PLUGINS = Path(__file__).resolve().parent.parent / "plugins"

GOOD = textwrap.dedent('''
    from ishowttsd.hookspecs import hookimpl
    from ishowttsd.messages import Kind, Message
    from ishowttsd.source import Source

    class Hello(Source):
        type = "hello"
        finite = True
        async def run(self):
            self.emit(Message(platform="hello", kind=Kind.DANMAKU, text="hi"))

    @hookimpl
    def ishowtts_register_sources(register):
        register(Hello)
''')


def make_dir(tmp_path, files: dict[str, str], mode: int = 0o755):
    d = tmp_path / "plugins"
    d.mkdir()
    for name, text in files.items():
        (d / name).write_text(text)
        (d / name).chmod(0o644)
    d.chmod(mode)
    return d


def test_builtins_load_as_ordinary_plugins():
    pm = PluginManager()
    pm.load_all(autoload=False)
    assert {"replay"} <= set(pm.sources)
    assert {"file"} <= set(pm.sinks)
    assert "espeak" in pm.engines
    origins = {r.name: r.origin for r in pm.records}
    assert origins["sources/replay"] == "builtin" and origins["sinks/file"] == "builtin"
    assert not pm.broken


def test_every_builtin_file_and_package_is_a_default_plugin():
    """A built-in that is not in DEFAULT_PLUGINS would silently never load."""
    on_disk = set()
    for kind in ("sources", "sinks"):
        for path in (REPO_PLUGINS / kind).iterdir():
            if path.name.startswith(("_", ".")):
                continue
            if path.suffix == ".py" or (path / "__init__.py").is_file():
                on_disk.add(f"ishowttsd.builtin_plugins.{kind}.{path.name.removesuffix('.py')}")
    assert on_disk, REPO_PLUGINS
    assert on_disk - set(DEFAULT_PLUGINS) == set(), "add these to DEFAULT_PLUGINS in ishowttsd/plugins.py"
    builtins = {m for m in DEFAULT_PLUGINS if m.startswith("ishowttsd.builtin_plugins.")}
    assert builtins - on_disk == set(), "DEFAULT_PLUGINS names built-ins that are not in plugins/"


def test_builtins_import_by_module_name_from_the_checkout():
    mod = importlib.import_module("ishowttsd.builtin_plugins.sources.replay")
    assert Path(mod.__file__) == REPO_PLUGINS / "sources" / "replay.py"
    assert builtin_plugins.CHECKOUT_PLUGINS == REPO_PLUGINS
    assert load_builtin("sinks/file") is importlib.import_module("ishowttsd.builtin_plugins.sinks.file")


def test_the_checkouts_plugin_folder_is_a_dropin_folder_but_sources_and_sinks_are_not_dropins():
    pm = PluginManager()
    pm.load_dir(REPO_PLUGINS)
    assert [r.name for r in pm.records] == [] and not pm.broken


def test_every_hookspec_is_implemented_by_a_builtin():
    pm = PluginManager()
    pm.load_all(autoload=False)
    for name in dir(hookspecs):
        if name.startswith("ishowtts_"):
            assert getattr(pm.pm.hook, name).get_hookimpls(), f"no built-in implements {name}"


def test_dropin_plugin_is_loaded(tmp_path):
    d = make_dir(tmp_path, {"hello.py": GOOD})
    pm = PluginManager()
    pm.load_all(extra_dirs=[d], autoload=False)
    assert "hello" in pm.sources
    rec = next(r for r in pm.records if r.name == "hello")
    assert rec.state == "loaded" and rec.provides == ["source:hello"]


def test_broken_plugins_are_reported_and_skipped(tmp_path):
    d = make_dir(tmp_path, {
        "hello.py": GOOD,
        "syntax.py": "def (:\n",
        "importer.py": "import no_such_module_anywhere\n",
        "badreg.py": textwrap.dedent('''
            from ishowttsd.hookspecs import hookimpl
            @hookimpl
            def ishowtts_register_sinks(register):
                register(object)
        '''),
        "raiser.py": textwrap.dedent('''
            from ishowttsd.hookspecs import hookimpl
            @hookimpl
            def ishowtts_register_engines(register):
                raise RuntimeError("boom")
        '''),
    })  # fmt: skip
    pm = PluginManager()
    pm.load_all(extra_dirs=[d], autoload=False)
    broken = {r.name: r for r in pm.broken}
    assert set(broken) == {"syntax", "importer", "badreg", "raiser"}
    assert "SyntaxError" in broken["syntax"].error
    assert "no_such_module_anywhere" in broken["importer"].error
    assert "subclass of Sink" in broken["badreg"].error
    assert "boom" in broken["raiser"].error
    assert "hello" in pm.sources  # the good one still works


def test_strict_mode_reraises(tmp_path):
    d = make_dir(tmp_path, {"importer.py": "import no_such_module_anywhere\n"})
    with pytest.raises(ImportError):
        PluginManager(strict=True).load_all(extra_dirs=[d], autoload=False)


def test_world_writable_plugin_file_is_refused(tmp_path):
    d = make_dir(tmp_path, {"hello.py": GOOD})
    (d / "hello.py").chmod(0o666)
    pm = PluginManager()
    pm.load_all(extra_dirs=[d], autoload=False)
    assert "hello" not in pm.sources
    rec = next(r for r in pm.records if r.name == "hello")
    assert rec.state == "refused" and "chmod go-w" in rec.error


def test_group_writable_plugin_folder_is_refused(tmp_path):
    d = make_dir(tmp_path, {"hello.py": GOOD}, mode=0o775)
    pm = PluginManager()
    pm.load_all(extra_dirs=[d], autoload=False)
    assert "hello" not in pm.sources
    assert any(r.state == "refused" and "its group" in r.error for r in pm.records)


def test_refusal_is_fatal_in_strict_mode(tmp_path):
    d = make_dir(tmp_path, {"hello.py": GOOD}, mode=0o777)
    with pytest.raises(PluginRefused):
        PluginManager(strict=True).load_all(extra_dirs=[d], autoload=False)


def test_duplicate_type_is_reported(tmp_path):
    d = make_dir(tmp_path, {"a.py": GOOD, "b.py": GOOD.replace("class Hello", "class Hello2").replace("register(Hello)", "register(Hello2)")})
    pm = PluginManager()
    pm.load_all(extra_dirs=[d], autoload=False)
    assert [r.name for r in pm.broken] == ["b"]
    assert "already provided" in pm.broken[0].error


PACKAGE = {
    "__init__.py": textwrap.dedent('''
        from ishowttsd.hookspecs import hookimpl
        from .talker import Talker
        from . import words

        @hookimpl
        def ishowtts_register_sources(register):
            register(Talker)
    '''),
    "talker.py": textwrap.dedent('''
        from ishowttsd.messages import Kind, Message
        from ishowttsd.source import Source
        from .words import GREETING

        class Talker(Source):
            type = "talker"
            finite = True
            async def run(self):
                self.emit(Message(platform="talker", kind=Kind.DANMAKU, text=GREETING))
    '''),
    "words.py": 'GREETING = "hello from a package"\n',
}


def make_package(d: Path, name: str, files: dict[str, str]) -> Path:
    pkg = d / name
    pkg.mkdir(mode=0o755)
    pkg.chmod(0o755)
    for fname, text in files.items():
        (pkg / fname).write_text(text)
        (pkg / fname).chmod(0o644)
    return pkg


def test_dropin_package_loads_under_its_own_name_with_relative_imports(tmp_path):
    d = make_dir(tmp_path, {"hello.py": GOOD})
    make_package(d, "talkpkg", PACKAGE)
    make_package(d, "notapackage", {"loose.py": "raise SystemExit('a folder without __init__.py is not loaded')\n"})
    pm = PluginManager()
    pm.load_all(extra_dirs=[d], autoload=False)
    assert not pm.broken, pm.summary()
    assert {"hello", "talker"} <= set(pm.sources)
    rec = next(r for r in pm.records if r.name == "talkpkg")
    assert rec.origin == "file" and rec.path == str(d / "talkpkg") and rec.provides == ["source:talker"]
    mod = sys.modules["ishowtts_plugins.talkpkg"]
    assert mod.words.GREETING == "hello from a package"
    assert sys.modules["ishowtts_plugins.talkpkg.words"] is mod.words
    assert pm.sources["talker"].__module__ == "ishowtts_plugins.talkpkg.talker"
    assert not any(r.name == "notapackage" for r in pm.records)


@pytest.mark.parametrize("where", ["folder", "file", "subfolder"])
def test_dropin_package_is_refused_as_a_whole_when_any_part_is_writable_by_others(tmp_path, where):
    d = make_dir(tmp_path, {"hello.py": GOOD})
    pkg = make_package(d, "talkpkg", PACKAGE)
    (pkg / "sub").mkdir()
    (pkg / "sub").chmod(0o755)
    (pkg / "sub" / "data.txt").write_text("x")
    (pkg / "sub" / "data.txt").chmod(0o644)
    target = {"folder": pkg, "file": pkg / "words.py", "subfolder": pkg / "sub"}[where]
    target.chmod(0o777 if target.is_dir() else 0o666)
    pm = PluginManager()
    pm.load_all(extra_dirs=[d], autoload=False)
    assert "talker" not in pm.sources and "hello" in pm.sources
    rec = next(r for r in pm.records if r.name == "talkpkg")
    assert rec.state == "refused" and str(target) in rec.error and f"chmod -R go-w {pkg}" in rec.error
    assert "ishowtts_plugins.talkpkg" not in sys.modules or sys.modules["ishowtts_plugins.talkpkg"].__file__ != str(pkg / "__init__.py")


def test_a_broken_dropin_package_leaves_no_half_imported_modules(tmp_path):
    files = dict(PACKAGE)
    files["talker.py"] += "\nraise RuntimeError('broken on purpose')\n"
    d = make_dir(tmp_path, {})
    make_package(d, "brokenpkg", files)
    pm = PluginManager()
    pm.load_all(extra_dirs=[d], autoload=False)
    [rec] = pm.broken
    assert rec.name == "brokenpkg" and "broken on purpose" in rec.error
    assert not [m for m in sys.modules if m.startswith("ishowtts_plugins.brokenpkg")]


def test_load_builtin_reuses_the_module():
    assert load_builtin("sources/replay") is load_builtin("sources/replay")


def test_entry_point_plugins_are_loaded(tmp_path, monkeypatch):
    # a real distribution on sys.path whose metadata declares an `ishowtts` entry point
    site = tmp_path / "site"
    (site / "hello_ep").mkdir(parents=True)
    (site / "hello_ep" / "__init__.py").write_text(GOOD.replace('"hello"', '"hello_ep"'))
    dist = site / "hello_ep-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: hello-ep\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[ishowtts]\nhello_ep = hello_ep\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delenv("ISHOWTTS_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    pm = PluginManager()
    pm.load_all()
    assert "hello_ep" in pm.sources
    assert any(r.origin == "entrypoint" and r.name == "hello_ep" for r in pm.records)


def test_a_plugin_that_exits_is_broken_not_fatal(tmp_path):
    d = make_dir(tmp_path, {"quitter.py": "import sys\nsys.exit(3)\n", "hello.py": GOOD})
    pm = PluginManager()
    pm.load_all(extra_dirs=[d], autoload=False)
    assert [r.name for r in pm.broken] == ["quitter"] and "SystemExit" in pm.broken[0].error
    assert "hello" in pm.sources


def test_a_configured_plugin_folder_that_is_missing_is_reported(tmp_path):
    pm = PluginManager()
    pm.load_all(extra_dirs=[tmp_path / "nope"], autoload=False)
    [rec] = pm.broken
    assert "plugin_dirs" in rec.error and "does not exist" in rec.error
