/* LinePoller: TCP connections read from one epoll set (see module.c). */

#include "fastpath.h"

#include <unistd.h>

/* -- TCP: connections read by one epoll set --------------------------------
 *
 * LinePoller reads the connections whose LineReader it holds from one epoll
 * set, whose fd the event loop watches (loop.add_reader(poller.fileno(),
 * poller.poll)): one loop callback per wake-up however many connections are
 * ready, and for each a recv(), the lines through the same split_lines() as
 * feed(), and a send() of the replies.  The event loop's transport keeps the
 * socket but does not read it meanwhile (reading paused).
 *
 * The connection (the owner) keeps its state; the poller only reports facts.
 * add() lends it the connection's partial line, which remove() and the hand-back
 * give back.  After each plain chunk, owner.lines_read(taken, partial_left, now)
 * (the bound method looked up once, at add()).
 * Whatever a plain recv/handle/send cannot finish goes back with one call,
 * owner.handed_back(kind, unsent, status, taken, rest, extra, now): the peer
 * closed or the socket failed (HAND_CLOSED), a send that did not take every
 * byte (HAND_BLOCKED; the rest is `unsent`, for the transport to write), a line
 * for Python (HAND_UNUSUAL; status, taken, rest, extra as feed() reports them),
 * or a Python error in between (HAND_FAILED).  With status LINES_DONE, rest is
 * the partial line given back (and taken the lines not yet reported).  The
 * poller has let go of the connection by then.
 */

enum { HAND_CLOSED = 1, HAND_BLOCKED = 2, HAND_UNUSUAL = 3, HAND_FAILED = 4 };

#define POLL_EVENTS 256
/* Rounds of epoll_wait(0) per loop callback while connections are ready: at one
 * request in flight the next ones often arrive while the last are answered,
 * and serving them now saves the way round the event loop (measured: 11% less
 * CPU per line at 16 x 1, the same at 16 x 16).  Bounded so that the loop's
 * other work (UDP, timers, accepting) still comes round; and within them each
 * connection reads at most turn_bytes per callback, all of them together
 * about poll_bytes (both passed in by Python, the session's rule): a greedy
 * client waits for its next turn in its socket, while the others and UDP
 * have theirs. */
#ifndef POLL_ROUNDS
#define POLL_ROUNDS 4
#endif
#define RECV_SIZE 65536

typedef struct {
    PyObject_HEAD
    int epfd;
    int busy;
    PyObject *counters;
    PyObject *observe;  /* latency.observe or NULL */
    PyObject *members;  /* set of the polled LineReaders: the references epoll holds */
    Py_ssize_t turn_bytes;  /* bytes one connection may read per callback */
    Py_ssize_t poll_bytes;  /* bytes all of them may read per callback (then it returns) */
    Py_ssize_t poll_left;   /* of poll_bytes, in this callback */
    unsigned long serial;   /* which callback this is (a connection's turn is per callback) */
    char *buffer;       /* the partial line + one recv() */
    Py_ssize_t buffer_size;
    struct epoll_event events[POLL_EVENTS];
} LinePoller;

static PyTypeObject LinePollerType;

/* Take the reader out of the epoll set.  Returns its owner (a new reference);
 * *partial gets the lent partial line back (a new reference, b"" if none). */
static PyObject *
poller_release(LinePoller *self, LineReader *reader, PyObject **partial)
{
    if (self->epfd >= 0 && reader->fd >= 0) {
        struct epoll_event unused = {0};
        (void)epoll_ctl(self->epfd, EPOLL_CTL_DEL, reader->fd, &unused); /* gone if fd closed */
    }
    PyObject *owner = reader->owner;
    PyObject *lent = reader->partial;
    Py_CLEAR(reader->on_read);
    reader->owner = NULL;
    reader->partial = NULL;
    reader->polled = 0;
    reader->fd = -1;
    if (PySet_Discard(self->members, (PyObject *)reader) < 0) PyErr_WriteUnraisable(self->members);
    if (partial != NULL) {
        *partial = lent != NULL ? lent : PyBytes_FromStringAndSize(NULL, 0);
    } else {
        Py_XDECREF(lent);
    }
    return owner != NULL ? owner : Py_NewRef(Py_None);
}

static PyObject *
LinePoller_add(LinePoller *self, PyObject *args)
{
    PyObject *owner, *partial;
    LineReader *reader;
    int fd;
    if (!PyArg_ParseTuple(args, "O!iOS:add", &LineReaderType, &reader, &fd, &owner, &partial)) {
        return NULL;
    }
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "the poller is closed");
        return NULL;
    }
    if (reader->polled) {
        PyErr_SetString(PyExc_ValueError, "this reader is polled already");
        return NULL;
    }
    if (reader->counters != self->counters) {
        PyErr_SetString(PyExc_ValueError, "the reader counts into other counters than the poller");
        return NULL;
    }
    PyObject *on_read = PyObject_GetAttr(owner, names.lines_read);
    if (on_read == NULL) return NULL;
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = reader};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &event) < 0) {
        Py_DECREF(on_read);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    if (PySet_Add(self->members, (PyObject *)reader) < 0) {
        (void)epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, &event);
        Py_DECREF(on_read);
        return NULL;
    }
    Py_XSETREF(reader->on_read, on_read);
    reader->polled = 1;
    reader->fd = fd;
    Py_XSETREF(reader->owner, Py_NewRef(owner));
    Py_XSETREF(reader->partial, Py_NewRef(partial));
    Py_RETURN_NONE;
}

static PyObject *
LinePoller_remove(LinePoller *self, PyObject *arg)
{
    if (!PyObject_TypeCheck(arg, &LineReaderType)) {
        PyErr_SetString(PyExc_TypeError, "expected a LineReader");
        return NULL;
    }
    int member = PySet_Contains(self->members, arg);
    if (member < 0) return NULL;
    if (!member) Py_RETURN_NONE;
    PyObject *partial;
    Py_DECREF(poller_release(self, (LineReader *)arg, &partial));
    return partial;
}

static int
poller_buffer(LinePoller *self, Py_ssize_t size)
{
    if (size <= self->buffer_size) return 0;
    char *grown = PyMem_Realloc(self->buffer, (size_t)size);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->buffer = grown;
    self->buffer_size = size;
    return 0;
}

/* Of out->data[sent:], the bytes that end a message begun before ``sent``: with a
 * length prefix, where its first whole message starts (lines: 0, Python finds the
 * line ends itself). */
static Py_ssize_t
unsent_lead(LineReader *reader, Replies *out, Py_ssize_t sent)
{
    int prefix = reader->length_prefix;
    if (!prefix) return 0;
    Py_ssize_t pos = 0;
    while (pos < sent) {
        Py_ssize_t length = 0;
        for (int i = 0; i < prefix; i++) length = length << 8 | (unsigned char)out->data[pos + i];
        pos += prefix + length;
    }
    return pos - sent;
}

/* One ready connection: recv, lines, report, send.  Returns 0 (keep polling
 * it) or the HAND_* kind; *unsent gets the replies the socket did not take and
 * *report what the owner must see. */
static int
poll_one(LinePoller *self, LineReader *reader, double now, PyObject *now_obj, Replies *out,
         long long delta[C_COUNT], PyObject **unsent, LinesReport *report)
{
    PyObject *pending = reader->partial;  /* lent by the owner */
    Py_ssize_t held = pending != NULL ? PyBytes_GET_SIZE(pending) : 0;
    Py_ssize_t want = reader->turn_left < RECV_SIZE ? reader->turn_left : RECV_SIZE;
    if (poller_buffer(self, held + want) < 0) return HAND_FAILED;
    if (held) memcpy(self->buffer, PyBytes_AS_STRING(pending), (size_t)held);
    ssize_t got = recv(reader->fd, self->buffer + held, (size_t)want, 0);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    if (got <= 0) return HAND_CLOSED;  /* EOF or an error: the transport reads it again */
    reader->turn_left -= got;
    self->poll_left -= got;

    Py_CLEAR(reader->partial);  /* in the buffer now; what is left comes back in *report */
    long long replied = delta[C_REPLIED];
    int fd = reader->fd;
    int failed = split_lines(reader, self->buffer, held + got, NULL, out, delta, report);
    int kind = 0;
    if (!reader->polled) {
        /* Python took the connection back while its handlers ran: the replies so far
         * go to the owner, for its transport, and the poller is done with it. */
        PyObject *error_type, *error_value, *error_tb;
        PyErr_Fetch(&error_type, &error_value, &error_tb);
        reader->unsent_lead = 0;
        *unsent = PyBytes_FromStringAndSize(out->data, out->len);
        if (*unsent == NULL) PyErr_WriteUnraisable((PyObject *)self);
        observe_replies(self->observe, delta[C_REPLIED] - replied, now);
        PyErr_Restore(error_type, error_value, error_tb);
        replies_free(out);
        return failed ? HAND_FAILED : report->status != LINES_DONE ? HAND_UNUSUAL : HAND_BLOCKED;
    }
    if (failed) {
        kind = HAND_FAILED;
    } else if (report->status != LINES_DONE) {
        kind = HAND_UNUSUAL;
    } else {
        /* Plain: the partial line stays lent; the owner hears what was read. */
        reader->partial = report->rest;
        report->rest = NULL;
        PyObject *taken = PyLong_FromLongLong(report->taken);
        PyObject *left = PyLong_FromSsize_t(PyBytes_GET_SIZE(reader->partial));
        PyObject *result = NULL;
        if (taken != NULL && left != NULL) {
            PyObject *call[3] = {taken, left, now_obj};
            result = PyObject_Vectorcall(reader->on_read, call, 3, NULL);
        }
        Py_XDECREF(taken);
        Py_XDECREF(left);
        if (result == NULL) {
            kind = HAND_FAILED;
        } else {
            Py_DECREF(result);
            report->taken = 0;  /* reported */
        }
    }
    if (out->len > 0) {
        PyObject *error_type, *error_value, *error_tb;
        PyErr_Fetch(&error_type, &error_value, &error_tb);  /* kept for HAND_FAILED */
        ssize_t sent = send(fd, out->data, (size_t)out->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) sent = 0;  /* EAGAIN or an error: the transport writes it, or reports it */
        if (sent < out->len) {
            reader->unsent_lead = unsent_lead(reader, out, sent);
            *unsent = PyBytes_FromStringAndSize(out->data + sent, out->len - sent);
            if (*unsent == NULL) {
                PyErr_WriteUnraisable((PyObject *)self);
                kind = HAND_FAILED;
            } else if (!kind) {
                kind = HAND_BLOCKED;
            }
        }
        observe_replies(self->observe, delta[C_REPLIED] - replied, now);
        PyErr_Restore(error_type, error_value, error_tb);
        replies_free(out);
    }
    return kind;
}

/* Tell the owner it is handed back, with the report (see the top of this file). */
static void
hand_back(PyObject *owner, int kind, PyObject *unsent, LinesReport *report, PyObject *now_obj)
{
    PyObject *kind_obj = PyLong_FromLong(kind);
    PyObject *status = PyLong_FromLong(report->status);
    PyObject *taken = PyLong_FromLongLong(report->taken);
    PyObject *rest = report->rest != NULL ? Py_NewRef(report->rest) : PyBytes_FromStringAndSize(NULL, 0);
    PyObject *empty = unsent == NULL ? PyBytes_FromStringAndSize(NULL, 0) : NULL;
    if (kind_obj != NULL && status != NULL && taken != NULL && rest != NULL &&
        (unsent != NULL || empty != NULL)) {
        PyObject *call[8] = {owner, kind_obj, unsent != NULL ? unsent : empty, status, taken,
                             rest, report->extra != NULL ? report->extra : Py_None, now_obj};
        PyObject *result = PyObject_VectorcallMethod(names.handed_back, call, 8, NULL);
        if (result == NULL) PyErr_WriteUnraisable(owner);
        Py_XDECREF(result);
    } else {
        PyErr_WriteUnraisable(owner);
    }
    Py_XDECREF(kind_obj);
    Py_XDECREF(status);
    Py_XDECREF(taken);
    Py_XDECREF(rest);
    Py_XDECREF(empty);
}

/* Serve the connections ready now that have turn left, once each.  Returns how
 * many were served, or -1 with a Python error set. */
static int
poll_once(LinePoller *self)
{
    if (self->busy || self->epfd < 0) return 0;
    int count = epoll_wait(self->epfd, self->events, POLL_EVENTS, 0);
    if (count < 0 && errno != EINTR) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (count <= 0) return 0;
    double now = monotonic_now();
    PyObject *now_obj = PyFloat_FromDouble(now);
    if (now_obj == NULL) return -1;
    self->busy = 1;
    LineReader *ready[POLL_EVENTS];
    for (int i = 0; i < count; i++) {
        ready[i] = (LineReader *)self->events[i].data.ptr;
        Py_INCREF(ready[i]);  /* alive even if a handler makes Python let go of it */
    }
    /* (owner, kind, unsent, report) for each connection handed back, told after the loop. */
    PyObject *handed[POLL_EVENTS];
    int kinds[POLL_EVENTS], handbacks = 0;
    PyObject *unsent_of[POLL_EVENTS];
    LinesReport reports[POLL_EVENTS];
    long long delta[C_COUNT] = {0};
    Replies out;
    replies_init(&out);
    int served = 0;
    for (int i = 0; i < count; i++) {
        LineReader *reader = ready[i];
        if (!reader->polled) continue;  /* let go of by a handler earlier in this batch */
        if (reader->turn != self->serial) {  /* its first turn in this callback */
            reader->turn = self->serial;
            reader->turn_left = self->turn_bytes;
        }
        if (reader->turn_left <= 0 || self->poll_left <= 0) continue;  /* next callback */
        served++;
        PyObject *unsent = NULL;
        LinesReport *report = &reports[handbacks];
        *report = (LinesReport){LINES_DONE, 0, NULL, NULL};
        PyObject *owner = Py_NewRef(reader->owner != NULL ? reader->owner : Py_None);
        int kind = poll_one(self, reader, now, now_obj, &out, delta, &unsent, report);
        if (!kind) {
            lines_report_clear(report);
            Py_DECREF(owner);
            continue;
        }
        if (kind == HAND_FAILED && PyErr_Occurred()) PyErr_WriteUnraisable((PyObject *)reader);
        if (reader->polled) {
            PyObject *partial;
            Py_DECREF(poller_release(self, reader, &partial));
            if (report->status == LINES_DONE) {
                Py_XSETREF(report->rest, partial);  /* the partial line, given back */
            } else {
                Py_XDECREF(partial);
            }
        }
        handed[handbacks] = owner;
        kinds[handbacks] = kind;
        unsent_of[handbacks] = unsent;
        handbacks++;
    }
    replies_free(&out);
    if (flush_counters(self->counters, delta) < 0) PyErr_WriteUnraisable(self->counters);
    self->busy = 0;
    for (int i = 0; i < handbacks; i++) {
        hand_back(handed[i], kinds[i], unsent_of[i], &reports[i], now_obj);
        lines_report_clear(&reports[i]);
        Py_XDECREF(unsent_of[i]);
        Py_DECREF(handed[i]);
    }
    for (int i = 0; i < count; i++) Py_DECREF(ready[i]);
    Py_DECREF(now_obj);
    return served;
}

static PyObject *
LinePoller_poll(LinePoller *self, PyObject *Py_UNUSED(ignored))
{
    self->serial++;
    self->poll_left = self->poll_bytes;
    for (int round = 0; round < POLL_ROUNDS && self->poll_left > 0; round++) {
        int served = poll_once(self);
        if (served < 0) return NULL;
        if (served == 0) break;
    }
    Py_RETURN_NONE;
}

static PyObject *
LinePoller_fileno(LinePoller *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(self->epfd);
}

static PyObject *
LinePoller_len_method(LinePoller *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(self->members != NULL ? PySet_GET_SIZE(self->members) : 0);
}

/* Let go of every connection (their owners are not told) and close the epoll fd. */
static PyObject *
LinePoller_close(LinePoller *self, PyObject *Py_UNUSED(ignored))
{
    if (self->members != NULL) {
        PyObject *readers = PySequence_List(self->members);
        if (readers == NULL) return NULL;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(readers); i++) {
            Py_DECREF(poller_release(self, (LineReader *)PyList_GET_ITEM(readers, i), NULL));
        }
        Py_DECREF(readers);
    }
    if (self->epfd >= 0) {
        close(self->epfd);
        self->epfd = -1;
    }
    Py_RETURN_NONE;
}

static int
LinePoller_init(LinePoller *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"counters", "observe", "turn_bytes", "poll_bytes", NULL};
    PyObject *counters, *observe = Py_None;
    Py_ssize_t turn_bytes = -1, poll_bytes = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O$nn:LinePoller", keywords, &counters,
                                     &observe, &turn_bytes, &poll_bytes)) {
        return -1;
    }
    if (turn_bytes < 1 || poll_bytes < 1) {
        PyErr_SetString(PyExc_TypeError, "LinePoller needs turn_bytes and poll_bytes (>= 1)");
        return -1;
    }
    if (self->epfd >= 0 || self->members != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "LinePoller is initialised already");
        return -1;
    }
    self->members = PySet_New(NULL);
    if (self->members == NULL) return -1;
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    Py_XSETREF(self->counters, Py_NewRef(counters));
    Py_XSETREF(self->observe, observe == Py_None ? NULL : Py_NewRef(observe));
    self->turn_bytes = turn_bytes;
    self->poll_bytes = poll_bytes;
    return 0;
}

static PyObject *
LinePoller_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    LinePoller *self = (LinePoller *)type->tp_alloc(type, 0);
    if (self != NULL) self->epfd = -1;
    return (PyObject *)self;
}

static int
LinePoller_traverse(LinePoller *self, visitproc visit, void *arg)
{
    Py_VISIT(self->counters);
    Py_VISIT(self->observe);
    Py_VISIT(self->members);
    return 0;
}

static int
LinePoller_clear(LinePoller *self)
{
    Py_CLEAR(self->counters);
    Py_CLEAR(self->observe);
    Py_CLEAR(self->members);
    return 0;
}

static void
LinePoller_dealloc(LinePoller *self)
{
    PyObject_GC_UnTrack(self);
    if (self->epfd >= 0) close(self->epfd);
    LinePoller_clear(self);
    PyMem_Free(self->buffer);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef LinePoller_methods[] = {
    {"add", (PyCFunction)LinePoller_add, METH_VARARGS,
     "add(reader, fd, owner, partial)\n\n"
     "Read the connection on socket fd from now on (its transport must not read it,\n"
     "nor have bytes waiting to be written), with the partial line lent.  After each\n"
     "plain chunk owner.lines_read(taken, partial_left, now); when the poller hands\n"
     "it back, owner.handed_back(kind, unsent, status, taken, rest, extra, now):\n"
     "HAND_CLOSED the peer closed or the socket failed, HAND_BLOCKED a send left\n"
     "`unsent`, HAND_UNUSUAL a line for Python (status, taken, rest, extra as\n"
     "LineReader.feed reports them), HAND_FAILED a Python error (reported as\n"
     "unraisable).  With status LINES_DONE, rest is the partial line given back."},
    {"remove", (PyCFunction)LinePoller_remove, METH_O,
     "remove(reader) -> bytes | None\n\nStop reading that connection (its owner is not\n"
     "told); return its partial line, or None if it was not polled."},
    {"poll", (PyCFunction)LinePoller_poll, METH_NOARGS,
     "poll()\n\nServe every ready connection, and again those ready since, up to 4 rounds,\n"
     "each reading at most turn_bytes and all together about poll_bytes (the event\n"
     "loop's reader callback)."},
    {"fileno", (PyCFunction)LinePoller_fileno, METH_NOARGS, "The epoll fd (-1 once closed)."},
    {"count", (PyCFunction)LinePoller_len_method, METH_NOARGS, "How many connections it reads."},
    {"close", (PyCFunction)LinePoller_close, METH_NOARGS,
     "close()\n\nLet go of every connection and close the epoll fd."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LinePollerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "udpkit._fastpath.LinePoller",
    .tp_doc = "LinePoller(counters, observe=None, *, turn_bytes, poll_bytes): TCP "
              "connections with a LineReader, read from one epoll set in C; per callback "
              "each reads at most turn_bytes, all together about poll_bytes.",
    .tp_basicsize = sizeof(LinePoller),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = LinePoller_new,
    .tp_init = (initproc)LinePoller_init,
    .tp_dealloc = (destructor)LinePoller_dealloc,
    .tp_traverse = (traverseproc)LinePoller_traverse,
    .tp_clear = (inquiry)LinePoller_clear,
    .tp_methods = LinePoller_methods,
};

int
fastpath_add_line_poller(PyObject *module)
{
    if (PyType_Ready(&LinePollerType) < 0) return -1;
    if (PyModule_AddObjectRef(module, "LinePoller", (PyObject *)&LinePollerType) < 0 ||
        PyModule_AddIntConstant(module, "HAND_CLOSED", HAND_CLOSED) < 0 ||
        PyModule_AddIntConstant(module, "HAND_BLOCKED", HAND_BLOCKED) < 0 ||
        PyModule_AddIntConstant(module, "HAND_UNUSUAL", HAND_UNUSUAL) < 0 ||
        PyModule_AddIntConstant(module, "HAND_FAILED", HAND_FAILED) < 0) {
        return -1;
    }
    return 0;
}
