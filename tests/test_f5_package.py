"""The F5 engine's package: a light import, the names the rest of the code builds on, no loops."""

import ast
import subprocess
import sys
from pathlib import Path

import ishowttsd

PACKAGE = Path(ishowttsd.__file__).parent


def test_importing_the_engine_loads_neither_torch_nor_f5_tts():
    code = ("import sys; import ishowttsd.engines.f5, ishowttsd.engines; from ishowttsd.engines.f5 import F5Engine; "
            "print(sorted(m for m in ('torch', 'f5_tts', 'torchaudio', 'vocos') if m in sys.modules))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_package_exports_what_code_and_tests_import():
    import ishowttsd.engines.f5 as f5

    before_the_split = [  # from f5.py and f5_fast.py
        "ARCHS", "HOP", "N_FFT", "N_MELS", "SAMPLE_RATE", "F5Engine", "F5Settings", "Reference", "_Job", "_default_vocab",
        "import_f5", "load_vocab", "read_checkpoint", "load_checkpoint", "randomize", "vocos_config", "load_vocos",
        "read_audio", "normalize_ref_text", "split_chunks", "crossfade", "crossfade_join", "cpu_flags", "cpu_has_bf16",
        "cpu_has_amx", "cpu_has_vnni", "FastDiT", "Linear", "sample", "time_grid", "bucket", "rel_error",
        "onednn_available",
    ]  # fmt: skip
    missing = [n for n in before_the_split if not hasattr(f5, n)]
    assert not missing
    assert set(f5.__all__) <= set(dir(f5)) | set(f5._FAST)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports (at module level or inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for n in names:
            while n and n not in modules:
                n = n.rpartition(".")[0]
            if n:
                out.add(n)
    return out


def test_no_two_modules_import_each_other():
    files = {}
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE.parent).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    graph = {m: _imports(p, set(files)) - {m} for m, p in files.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo += graph[m]
        return False

    loops = sorted((a, b) for a in graph for b in graph[a] if reaches(b, a))
    assert not loops, f"import loops (module, what it imports that leads back to it): {loops}"
