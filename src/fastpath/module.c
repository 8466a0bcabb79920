/* udpkit._fastpath: the servers' hot loops in C (Linux), one type a file:
 * FastPath (udp.c), LineReader (tcp_lines.c), LinePoller (tcp_poller.c), and the
 * bench's open-loop sender Pacer (pacer.c).
 *
 * Rule: C moves bytes, splits lines, calls sync handlers and counts; it
 * decides only byte-level checks (truncated, empty, oversize, the amplification
 * cap, the exit line, a line over the limit).  Admission verdicts come from
 * Python (admission.check / constant_verdict / take); everything else (async
 * and unusual results, handler errors, logs, queues, a TCP connection's state:
 * its partial line, timestamps, pipelining, closing) is Python's, and C hands
 * it over through the public callbacks declared in udpkit/_native.py.
 *
 * One call of FastPath.read() does what UdpEndpoint.read_batch() does for up
 * to max_per_read datagrams, with the same outcome and counters:
 *
 *   recvmmsg (64 at a time, into preallocated buffers)
 *   -> MSG_TRUNC: dropped_truncated; empty: dropped_empty;
 *      > max_request: dropped_oversize; SO_RXQ_OVFL cmsg: kernel_drops
 *   -> admission (only if configured; a source whose verdict cannot change,
 *      e.g. an exempt loopback, is asked once and remembered with its Peer)
 *   -> handler(data, peer) with the public Peer NamedTuple
 *   -> bytes: amplification cap, then batched into one sendmmsg;
 *      None: no_reply; anything else (awaitable, bytearray, wrong type) and
 *      handler exceptions go back to Python (endpoint.handle_result,
 *      endpoint.handler_failed), which treats them as the pure path does.
 *   -> EAGAIN on send: the unsent replies go to the endpoint's bounded
 *      Python queue (endpoint.enqueue).
 *
 * Counter deltas are kept in C and added to the Counters object before
 * read() returns, so counters are exact whenever Python code can look.
 *
 * LineReader is the TCP counterpart for line framing, one per connection:
 * feed(partial, data) splits the bytes into lines, calls the sync handler per
 * line, writes the framed replies with one write and returns one report (the
 * LINES_* status, the requests taken, the rest, the unusual result).  It stops
 * at the first line Python must see (an awaitable or other non-bytes result,
 * an exception, the exit line, a line over the limit, a rate-limited line).
 *
 * LinePoller reads those connections too: one epoll set for all, one event
 * loop callback per wake-up, recv/split/send per ready connection, the facts
 * of each chunk reported to the connection (lines_read), and the connection
 * handed back (handed_back, with one report) at the first thing that is not
 * plain.
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
    if (names_init() < 0) return NULL;
    PyObject *module = PyModule_Create(&fastpath_module);
    if (module == NULL) return NULL;
    if (fastpath_add_udp(module) < 0 || fastpath_add_line_reader(module) < 0 ||
        fastpath_add_line_poller(module) < 0 || fastpath_add_pacer(module) < 0 ||
        names_export(module) < 0 ||
        PyModule_AddIntConstant(module, "LINES_DONE", LINES_DONE) < 0 ||
        PyModule_AddIntConstant(module, "LINES_EXIT", LINES_EXIT) < 0 ||
        PyModule_AddIntConstant(module, "LINES_OVERSIZE", LINES_OVERSIZE) < 0 ||
        PyModule_AddIntConstant(module, "LINES_RESULT", LINES_RESULT) < 0 ||
        PyModule_AddIntConstant(module, "LINES_ERROR", LINES_ERROR) < 0 ||
        PyModule_AddIntConstant(module, "LINES_LIMITED", LINES_LIMITED) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
