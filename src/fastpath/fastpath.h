/* udpkit._fastpath: what its C files share.  module.c has the overview.
 *
 * common.c      the interned names, the clock, counters, callbacks, exceptions
 * udp.c         FastPath: the UDP server's recvmmsg/handle/send loop
 * tcp_lines.c   LineReader: one TCP connection's line splitting and handler calls
 * tcp_poller.c  LinePoller: TCP connections read, answered and written from one epoll set
 * pacer.c       Pacer: udpkit bench's open-loop sends, paced in a C thread
 *
 * The contract with Python is written once, in udpkit/_native.py: the status
 * codes below are exported as module constants; the protocol literals, the
 * batch, grant and turn sizes come in through the constructors; the callbacks C
 * makes are public methods declared there as Protocols.
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

/* The Counters fields C adds to, one index each (names in common.c). */
enum {
    C_RECEIVED,
    C_REPLIED,
    C_NO_REPLY,
    C_EMPTY,
    C_OVERSIZE,
    C_TRUNCATED,
    C_DENIED,
    C_RATE_LIMITED,
    C_AMPLIFICATION,
    C_SEND_ERRORS,
    C_KERNEL_DROPS,
    C_COUNT
};

/* Every interned name C uses, in one struct, set once at module init. */
typedef struct {
    PyObject *counter[C_COUNT];
    /* the UDP endpoint's callbacks (_native.UdpEndpointCallbacks) */
    PyObject *handle_result, *handler_failed, *log_abuse, *enqueue, *send_failed,
        *receive_failed;
    /* the polled connection's callbacks (_native.PolledConnection) */
    PyObject *lines_read, *handed_back;
} FastpathNames;

extern FastpathNames names;

int names_init(void);
int names_export(PyObject *module);

double monotonic_now(void);

/* A clock's time in nanoseconds (CLOCK_MONOTONIC, CLOCK_REALTIME); inline, as the
 * pacer's spin reads it in a loop. */
static inline int64_t
clock_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Call a Python callback whose failure must not stop the server. */
void call_quietly(PyObject *callable, PyObject *const *args, size_t nargs);

/* Add delta[i] to counters.<names.counter[i]> for each non-zero i; zero delta. */
int flush_counters(PyObject *counters, long long delta[C_COUNT]);

/* Observe ``count`` replies answered since ``arrived`` (observe may be NULL). */
void observe_replies(PyObject *observe, long long count, double arrived);

/* The pending exception, normalised, with its traceback attached (a new reference). */
PyObject *take_exception(void);

/* take(host, now, want): tokens granted (0: rate limited), or -1 with an error set. */
long take_grant(PyObject *take, PyObject *host, PyObject *now, PyObject *want);

/* -- tcp_lines.c: shared with tcp_poller.c ---------------------------------- */

/* Where splitting a chunk stopped (exported to Python as LINES_*): LINES_DONE,
 * every complete line was handled; otherwise at a line Python must see.
 * LINES_EMPTY: an empty message the reader has no reply for (len16 framing,
 * where it closes the connection); rest starts with it. */
enum {
    LINES_DONE = 0,
    LINES_EXIT = 1,
    LINES_OVERSIZE = 2,
    LINES_RESULT = 3,
    LINES_ERROR = 4,
    LINES_LIMITED = 5,
    LINES_EMPTY = 6
};

/* Length-prefixed framing: the longest prefix LineReader reads (len16's is 2). */
#define MAX_LENGTH_PREFIX 4

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
    PyObject *write;        /* transport.write */
    PyObject *buffered;     /* transport.get_write_buffer_size, or NULL */
    PyObject *kept;         /* with buffered: kept(held, wire, None) when held > 0 */
    PyObject *observe;      /* latency.observe or NULL */
    Py_ssize_t max_line;
    PyObject *exit_line;    /* bytes: the line that asks to close, or NULL: none */
    PyObject *empty_reply;  /* bytes: the framed answer to an empty line, or NULL:
                             * Python judges it (LINES_EMPTY) */
    int length_prefix;      /* 0: lines end at "\n"; n: a big-endian length in n bytes first */
    Py_ssize_t unsent_lead; /* set by a LinePoller handing back unsent replies: bytes of
                             * them that end a message begun in an earlier send */
    /* While a LinePoller reads the connection (see tcp_poller.c). */
    int polled;
    int fd;
    PyObject *owner;        /* the connection told of what was read, and when handed back */
    PyObject *on_read;      /* owner.lines_read, looked up once at add() */
    PyObject *partial;      /* the unfinished line, lent by the owner while polled */
    unsigned long turn;     /* the poller's callback this connection's turn was in */
    Py_ssize_t turn_left;   /* bytes it may still read in that callback */
    /* A source under a rate limit: admission.take, its host, the grant size, and
     * the tokens left of the last grant.  take is NULL for a source never limited. */
    PyObject *take;
    PyObject *host;
    PyObject *grant;
    long credit;
} LineReader;

/* What one chunk's lines came to: the report feed() returns. */
typedef struct {
    int status;             /* LINES_* */
    long long taken;        /* requests taken (the stopping line included for 3, 4) */
    PyObject *rest;         /* DONE: the unfinished line; else the bytes after the stop */
    PyObject *extra;        /* the handler's result (3) or exception (4), else NULL */
} LinesReport;

/* Split and handle buf[0:size] (the partial line + new bytes); see tcp_lines.c.
 * Returns 0, or -1 with a Python error set. */
int split_lines(LineReader *self, const char *buf, Py_ssize_t size, PyObject *source,
                Replies *out, long long delta[C_COUNT], LinesReport *report);

void lines_report_clear(LinesReport *report);

extern PyTypeObject LineReaderType;

/* -- each file adds its type to the module (module.c) ----------------------- */

int fastpath_add_udp(PyObject *module);
int fastpath_add_line_reader(PyObject *module);
int fastpath_add_line_poller(PyObject *module);
int fastpath_add_pacer(PyObject *module);

#endif /* UDPKIT_FASTPATH_H */
