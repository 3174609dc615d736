"""What the docs tell users to run must work: no install of a package that is not ours, no
engine that does not exist."""

from __future__ import annotations

import re
from pathlib import Path

from ishowttsd.config import load_config

REPO = Path(__file__).resolve().parent.parent


def _docs() -> dict[str, str]:
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "config").glob("*.toml"),
             *(REPO / "ishowttsd").rglob("*.py"), *(REPO / "plugins").rglob("*.py")]  # fmt: skip
    return {str(p.relative_to(REPO)): p.read_text(encoding="utf-8") for p in files}


def test_no_doc_installs_ishowttsd_from_pypi():
    # `pip install 'ishowttsd[...]'` fetches a package named ishowttsd from PyPI: not ours
    bad = {name: m.group(0) for name, text in _docs().items()
           for m in re.finditer(r"pip install\s+(?:-\S+\s+)*['\"]?ishowttsd\b", text)}  # fmt: skip
    assert not bad, f"install from the checkout or a built wheel instead: {bad}"


def test_configs_name_only_engines_that_exist():
    from ishowttsd.plugins import PluginManager

    pm = PluginManager()
    pm.load_all(autoload=False)
    known = set(pm.engines)
    for name, text in _docs().items():
        if not name.startswith("config/"):
            continue
        for line in text.splitlines():
            m = re.match(r"\s*default\s*=\s*\"(\w+)\"\s*#\s*(.*)", line)
            if m and "|" in m.group(2):
                offered = {w.strip() for w in m.group(2).split("|") if re.fullmatch(r"\s*\w+\s*", w)}
                assert offered <= known, f"{name} offers engines that do not exist: {sorted(offered - known)}"
        cfg = load_config(REPO / name)
        for engine in {cfg.engine.default, cfg.engine.fallback, *(v.engine for v in cfg.voices)} - {None}:
            assert engine in known, f"{name} uses engine {engine!r}, which does not exist"
