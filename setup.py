"""Build the optional C extension ``udpkit._fastpath``; pyproject.toml holds everything else.

Rule: the install never fails for want of a compiler.  The extension is
``optional``: if it does not build (no compiler, no Python headers, not
Linux), the build says so in one line and udpkit runs on its pure-Python
path, which the server announces at start-up.  ``UDPKIT_NO_EXTENSION=1``
skips the build.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """Build the extension, or say in one line why udpkit will run without it."""

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # the compiler's own output is above this line
            reason = " ".join(str(exc).split()) or type(exc).__name__
            print(f"udpkit: the C extension {ext.name} was not built ({reason}); "
                  "udpkit runs on its pure-Python path", file=sys.stderr)

ext_modules = []
if sys.platform == "linux" and os.environ.get("UDPKIT_NO_EXTENSION", "") in ("", "0"):
    ext_modules.append(
        Extension(
            "udpkit._fastpath",
            sources=[
                f"src/fastpath/{name}.c"
                for name in ("module", "common", "udp", "tcp_lines", "tcp_poller", "pacer")
            ],
            depends=["src/fastpath/fastpath.h"],
            extra_compile_args=["-O2", "-fno-strict-aliasing", "-fvisibility=hidden"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules, cmdclass={"build_ext": OptionalBuildExt})
