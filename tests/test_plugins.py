import textwrap

import pytest

from ishowttsd import hookspecs
from ishowttsd.plugins import PluginManager, PluginRefused, load_builtin

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
