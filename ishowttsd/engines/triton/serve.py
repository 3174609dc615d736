"""Start the Triton server that PyPI's `nvidia-pytriton` wheel ships: for CPU hosts and tests.

On a GPU host, use NVIDIA's Triton container instead (docs/triton.md). Run this with the
server's own Python environment (`make triton-env` builds `.venv-triton` from the system's
`/usr/bin/python3`, with nvidia-pytriton, torch and this package):

    .venv-triton/bin/python -m ishowttsd.engines.triton.serve \\
        --model-repository contrib/triton/model_repository --grpc-port 8001 --allow-http false

Every option is tritonserver's own. This execs `tritonserver` with what the wheel's Python
backend needs: the wheel's libraries on LD_LIBRARY_PATH, the backend stub built for this
Python version, and this environment's `bin/` first on PATH, which is how the stub's embedded
interpreter finds this environment's packages. The stub links the system's libpython, so the
environment must be built from the system's interpreter: under another build of the same
version every model fails with "'_thread.RLock' object has no attribute '_recursion_count'".
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path


class ServeError(Exception):
    """The environment cannot run the server; the message says how to fix it."""


def command(args: list[str], prefix: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The tritonserver command line and environment for `args` (tritonserver's options)."""
    prefix = Path(prefix or sys.prefix)
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServeError(f"nvidia-pytriton is not installed in {prefix}; run `make triton-env` "
                         "(or pip install nvidia-pytriton into the server's environment)")  # fmt: skip
    root = Path(list(spec.submodule_search_locations)[0])
    server = root / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServeError(f"nvidia-pytriton has no Python backend stub for Python {version}; use Python 3.8 to 3.13")
    base = Path(sys.base_prefix)
    if base != Path("/usr") and not os.environ.get("ISHOWTTS_TRITON_ANY_PYTHON"):
        raise ServeError(
            f"{prefix} is built from the Python in {base}, but the backend stub links the system's libpython{version}: "
            f"models would fail to start ('_thread.RLock' has no '_recursion_count'). Build the server's environment "
            f"from /usr/bin/python3 (make triton-env) or set ISHOWTTS_TRITON_ANY_PYTHON=1 if {base} is that build"
        )
    backends = prefix / "tritonserver-backends"
    python = backends / "python"
    python.mkdir(parents=True, exist_ok=True)
    for target, name in (
        (server / "backends" / "python" / "libtriton_python.so", "libtriton_python.so"),
        (server / "backends" / "python" / "triton_python_backend_utils.py", "triton_python_backend_utils.py"),
        (stub, "triton_python_backend_stub"),
    ):  # fmt: skip
        link = python / name
        if not (link.is_symlink() and link.resolve() == target.resolve()):
            link.unlink(missing_ok=True)
            link.symlink_to(target)
    env = dict(os.environ)
    libs = str(root.parent / "nvidia_pytriton.libs")
    env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    env["PATH"] = f"{prefix / 'bin'}:{env.get('PATH', '')}"
    return [str(server / "bin" / "tritonserver"), f"--backend-directory={backends}", *args], env


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(__doc__.strip(), file=sys.stderr)
        sys.exit(2)
    try:
        cmd, env = command(args)
    except ServeError as e:
        print(f"ishowttsd.engines.triton.serve: {e}", file=sys.stderr)
        sys.exit(2)
    os.execve(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
