"""Hatch build hook: compiles the edge's HTTP/1.1 parsers (`native/http1.c` with the llhttp sources vendored beside it)
into `rhone_local/_http1<EXT_SUFFIX>`, for wheels and editable installs alike.

Optional by design: without a C compiler or Python's headers the install goes on, and the edge uses the same parsers
built on httptools (`rhone_local/http1.py`), a little slower. `RHONE_NO_NATIVE=1` skips it. After changing
`native/`, reinstall (`uv pip install -e .`) to rebuild; `tests/local/test_http1.py` fails while the built module is
older than its sources.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCES = ["native/http1.c", "native/llhttp/src/llhttp.c", "native/llhttp/src/api.c", "native/llhttp/src/http.c"]
COMPILE_TIMEOUT_SECONDS = 300


def extension_path(root: Path) -> Path:
    return root / "rhone_local" / ("_http1" + sysconfig.get_config_var("EXT_SUFFIX"))


def build_extension(root: Path) -> Path | None:
    """Compile the parser module in place (when its sources are newer); its path, or None when it could not be."""
    target = extension_path(root)
    sources = [root / s for s in SOURCES] + [root / "native/llhttp/include/llhttp.h", Path(__file__)]
    try:
        if target.exists() and target.stat().st_mtime >= max(s.stat().st_mtime for s in sources):
            return target
    except OSError:  # a source is missing: the compiler says which
        pass
    # LDSHARED compiles and links an extension as this Python was built to (`-shared` on Linux, `-bundle -undefined
    # dynamic_lookup` on macOS).
    linker = sysconfig.get_config_var("LDSHARED") or f"{sysconfig.get_config_var('CC') or 'cc'} -shared"
    include = sysconfig.get_paths()["include"]
    command = [
        *shlex.split(linker),
        "-fPIC",
        "-O2",
        "-fvisibility=hidden",  # llhttp's symbols stay private to this module (httptools carries its own copy)
        f"-I{root / 'native/llhttp/include'}",
        f"-I{include}",
        *[str(root / s) for s in SOURCES],
        "-o",
        str(target.with_suffix(f".{os.getpid()}.tmp")),
    ]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=COMPILE_TIMEOUT_SECONDS)
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        print(
            f"rhone: the edge's C parser was not built ({error}); the edge will use httptools instead.\n"
            + detail.decode(errors="replace")[-2000:],
            file=sys.stderr,
        )
        target.with_suffix(f".{os.getpid()}.tmp").unlink(missing_ok=True)
        target.unlink(missing_ok=True)  # never keep a module built from other sources: the edge falls back instead
        return None
    os.replace(target.with_suffix(f".{os.getpid()}.tmp"), target)
    return target


class NativeParserHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("RHONE_NO_NATIVE") == "1":
            return
        built = build_extension(Path(self.root))
        if built is None or version == "editable":  # an editable install imports it from the checkout itself
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        build_data["force_include"][str(built)] = f"rhone_local/{built.name}"
