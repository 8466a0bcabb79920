"""Tier (c): the UDP fast path when ``sendmmsg`` does not take every reply.

On loopback the kernel practically never refuses a UDP send, so the C
sender's partial-send and EAGAIN branches are provoked at the system-call
boundary: a small shim, built here with the machine's compiler and loaded
into a real ``udpkit serve`` with ``LD_PRELOAD``, makes every third
``sendmmsg`` fail with EAGAIN and every other one send only half the batch.
Every reply must still arrive exactly once (the rest of a batch goes on, the
refused part waits in the Python send queue), and the counters must add up.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.processes import parse_summary, serve
from udpkit import _native

SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <sys/socket.h>

static long calls, eagain, partial;

int sendmmsg(int fd, struct mmsghdr *vec, unsigned int n, int flags) {
    typedef int (*sendmmsg_t)(int, struct mmsghdr *, unsigned int, int);
    static sendmmsg_t real;
    if (real == NULL) real = (sendmmsg_t)dlsym(RTLD_NEXT, "sendmmsg");
    calls++;
    if (calls % 3 == 0) {
        eagain++;
        errno = EAGAIN;
        return -1;
    }
    if (calls % 3 == 1 && n > 1) {
        partial++;
        n /= 2;
    }
    return real(fd, vec, n, flags);
}

__attribute__((destructor)) static void report(void) {
    fprintf(stderr, "shim: calls=%ld eagain=%ld partial=%ld\n", calls, eagain, partial);
}
"""

pytestmark = [
    pytest.mark.skipif(not _native.built(), reason="udpkit._fastpath not built"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler for the shim"),
]


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shim")
    source, library = folder / "shim.c", folder / "shim.so"
    source.write_text(SHIM)
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(library), str(source), "-ldl"],
                   check=True, capture_output=True)
    return library


def test_refused_and_partial_sends_lose_and_repeat_nothing(shim: Path) -> None:
    batches, batch = 40, 48
    with serve("--no-tcp", env={"LD_PRELOAD": str(shim)}) as server:
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        client.settimeout(3)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        address = ("127.0.0.1", server.port)
        got: list[bytes] = []
        try:
            for b in range(batches):
                names = [b"n%d-%d" % (b, i) for i in range(batch)]
                for name in names:  # a burst, so the server reads (and sends) a batch
                    client.sendto(name, address)
                replies = sorted(client.recv(100) for _ in names)
                assert replies == sorted(b"Hello, " + name + b"!" for name in names)
                got.extend(replies)
            client.settimeout(0.2)
            with pytest.raises(TimeoutError):
                client.recv(100)  # and nothing twice
        finally:
            client.close()
        code, log = server.stop()
    assert code == 0
    assert "UDP fast path: recvmmsg/sendmmsg" in "\n".join(server.log)
    total = batches * batch
    assert len(got) == total
    counters = parse_summary(log)["udp"]
    assert (counters["received"], counters["replied"], counters["send"]) == (total, total, 0)
    shim_line = next(line for line in log.splitlines() if line.startswith("shim:"))
    fired = dict(part.split("=") for part in shim_line.split()[1:])
    assert int(fired["eagain"]) > 0
    assert int(fired["partial"]) > 0
