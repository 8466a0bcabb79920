/* udpkit._fastpath: what its C files share.  module.c has the overview.
 *
 * common.c      the clock, quiet callbacks
 * udp.c         FastPath: the UDP server's recvmmsg/handle/sendmmsg loop
 * tcp_lines.c   LineReader: one TCP connection's line framing and handler calls
 * tcp_poller.c  LinePoller: TCP connections read, answered and written from one epoll set
 *
 * Built with -fvisibility=hidden: only PyInit__fastpath leaves the shared object.
 */

#ifndef UDPKIT_FASTPATH_H
#define UDPKIT_FASTPATH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#if !defined(__linux__)
#error "udpkit._fastpath needs Linux (recvmmsg/sendmmsg)"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

/* -- common.c -------------------------------------------------------------- */

double monotonic_now(void);

/* Call a Python callback whose failure must not stop the server. */
void call_quietly(PyObject *callable, PyObject *const *args, size_t nargs);

/* -- tcp_lines.c: shared with tcp_poller.c ---------------------------------- */

/* What LineReader.feed() returns when every complete line was handled:
 * LINES_TAKEN if there was at least one, | PARTIAL_LEFT if an unfinished line
 * is left in framing.partial.  A negative value: it stopped at a line that
 * Python must see (-status below); unusual() says the rest. */
#define LINES_TAKEN 2
#define PARTIAL_LEFT 1
enum {
    LINES_DONE = 0,
    LINES_EXIT = 1,
    LINES_OVERSIZE = 2,
    LINES_RESULT = 3,
    LINES_ERROR = 4,
    LINES_LIMITED = 5
};
#define LINES_FAILED (-100) /* a Python error is set */

/* The framed replies of one call: on the stack until they outgrow it. */
typedef struct {
    char *data;
    Py_ssize_t len, cap;
    int heap;
    char stack[4096];
} Replies;

void replies_init(Replies *out);
void replies_free(Replies *out);
int replies_put(Replies *out, const char *bytes, Py_ssize_t size);

typedef struct {
    PyObject_HEAD
    PyObject *handler;
    PyObject *peer;
    PyObject *counters;
    PyObject *framing;      /* udpkit.core.framing.LineFraming: .partial, .max_line */
    PyObject *write;        /* transport.write */
    PyObject *observe;      /* latency.observe or NULL */
    Py_ssize_t max_line;
    /* Where the last feed() stopped, for unusual(). */
    int status;
    long long handled;
    PyObject *rest;
    PyObject *extra;
    /* While a LinePoller reads the connection (see below). */
    int polled;
    int fd;
    PyObject *owner;        /* the TcpConnection, told when the poller hands it back */
    double last_request;    /* monotonic time of the last complete line, or -1 */
    double line_started;    /* when the unfinished line began, or -1 */
    /* A source under a rate limit: admission.take, its host, the grant size, and
     * the tokens left of the last grant.  take is NULL for a source never limited. */
    PyObject *take;
    PyObject *host;
    PyObject *take_want;
    long credit;
} LineReader;

/* What the lines of one received chunk added to the counters. */
typedef struct {
    long long received, replied, no_reply, empty;
} LineCounts;

/* Add the counts to the Counters object and zero them. */
int flush_line_counts(PyObject *counters, LineCounts *counts);

/* Split and handle buf[0:size] (framing.partial + new bytes); see tcp_lines.c. */
long split_lines(LineReader *self, const char *buf, Py_ssize_t size, PyObject *source,
                 Replies *out, LineCounts *counts);

/* Time each of ``replied`` replies took since ``arrived`` (when latency is observed). */
void observe_replies(PyObject *observe, long long replied, double arrived);

extern PyTypeObject LineReaderType;

/* -- each file adds its type to the module (module.c) ----------------------- */

int fastpath_add_udp(PyObject *module);
int fastpath_add_line_reader(PyObject *module);
int fastpath_add_line_poller(PyObject *module);

#endif /* UDPKIT_FASTPATH_H */
