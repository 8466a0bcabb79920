/* udpkit._fastpath: the servers' hot loops in C (Linux), one type a file:
 * FastPath (udp.c), LineReader (tcp_lines.c), LinePoller (tcp_poller.c).
 *
 * Rule: this module moves bytes and counts; every decision that is not a
 * byte-level check stays in Python.  One call of FastPath.read() does what
 * UdpEndpoint._read_batch() does for up to 256 datagrams, with the same
 * outcome for each datagram and the same counters:
 *
 *   recvmmsg (64 at a time, into preallocated buffers)
 *   -> MSG_TRUNC: dropped_truncated; empty: dropped_empty;
 *      > max_request: dropped_oversize; SO_RXQ_OVFL cmsg: kernel_drops
 *   -> admission (only if configured; a source whose verdict cannot change,
 *      e.g. an exempt loopback, is asked once and remembered with its Peer)
 *   -> handler(data, peer) with the public Peer NamedTuple
 *   -> bytes: amplification cap, then batched into one sendmmsg;
 *      None: no_reply; anything else (awaitable, bytearray, wrong type) and
 *      handler exceptions go back to Python (endpoint._handle_result,
 *      endpoint._handler_failed), which treats them as the pure path does.
 *   -> EAGAIN on send: the unsent replies go to the endpoint's bounded
 *      Python queue (endpoint._enqueue).
 *
 * Counter deltas are kept in C and added to the Counters object before
 * read() returns, so counters are exact whenever Python code can look.
 *
 * LineReader is the TCP counterpart for line framing, one per connection: its
 * feed() splits received bytes into lines, calls the sync handler per line and
 * writes the framed replies with one write, counting what
 * TcpConnection._handle counts.
 * Anything unusual (an awaitable or other non-bytes result, an exception,
 * `exit`, a line over the limit) stops it at that line and goes back to
 * Python, which handles it as the pure path does.
 *
 * LinePoller reads those connections too: one epoll set for all, one event
 * loop callback per wake-up, recv/split/send per ready connection, and the
 * connection handed back to Python at the first thing that is not plain.
 */

#include "fastpath.h"

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "udpkit._fastpath",
    .m_doc = "The UDP server's batched receive/handle/send loop (Linux, recvmmsg/sendmmsg), "
             "the TCP line splitter and the TCP connection poller.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
    PyObject *module = PyModule_Create(&fastpath_module);
    if (module == NULL) return NULL;
    if (fastpath_add_udp(module) < 0 || fastpath_add_line_reader(module) < 0 ||
        fastpath_add_line_poller(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
