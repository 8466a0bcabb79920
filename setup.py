"""Build the optional C extension ``udpkit._fastpath``; pyproject.toml holds everything else.

Rule: the install never fails for want of a compiler.  The extension is
``optional``: if it does not build (no compiler, no Python headers, not
Linux), setuptools warns and udpkit runs on its pure-Python UDP path, which
the server announces at start-up.  ``UDPKIT_NO_EXTENSION=1`` skips the build.
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup

ext_modules = []
if sys.platform == "linux" and os.environ.get("UDPKIT_NO_EXTENSION", "") in ("", "0"):
    ext_modules.append(
        Extension(
            "udpkit._fastpath",
            sources=[
                f"src/fastpath/{name}.c"
                for name in ("module", "common", "udp", "tcp_lines", "tcp_poller")
            ],
            depends=["src/fastpath/fastpath.h"],
            extra_compile_args=["-O2", "-fno-strict-aliasing", "-fvisibility=hidden"],
            optional=True,
        )
    )

setup(ext_modules=ext_modules)
