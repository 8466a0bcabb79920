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
 * socket but does not read it meanwhile (reading paused).  Whatever a plain
 * recv/handle/send cannot finish goes back to the connection, with
 * owner._from_poller(kind, unsent): the peer closed or the socket failed
 * (nothing read), a send that did not take every byte (the rest is `unsent`,
 * for the transport to write), a line for Python (reader.unusual() says
 * which), or a Python error in between.  The poller has let go of the
 * connection by then; the owner reads it through its transport again.
 */

enum { HAND_CLOSED = 1, HAND_BLOCKED = 2, HAND_UNUSUAL = 3, HAND_FAILED = 4 };

#define POLL_EVENTS 256
/* Rounds of epoll_wait(0) per loop callback while connections are ready: at one
 * request in flight the next ones often arrive while the last are answered,
 * and serving them now saves the way round the event loop (measured: 11% less
 * CPU per line at 16 x 1, the same at 16 x 16).  Bounded so that the loop's
 * other work (UDP, timers, accepting) still comes round. */
#ifndef POLL_ROUNDS
#define POLL_ROUNDS 4
#endif
#define RECV_SIZE 65536

static PyObject *str_from_poller, *str_partial;

typedef struct {
    PyObject_HEAD
    int epfd;
    int busy;
    PyObject *counters;
    PyObject *observe;  /* latency.observe or NULL */
    PyObject *members;  /* set of the polled LineReaders: the references epoll holds */
    char *buffer;       /* framing.partial + one recv() */
    Py_ssize_t buffer_size;
    struct epoll_event events[POLL_EVENTS];
} LinePoller;

static PyTypeObject LinePollerType;

/* Take the reader out of the epoll set.  Returns its owner (a new reference). */
static PyObject *
poller_release(LinePoller *self, LineReader *reader)
{
    if (self->epfd >= 0 && reader->fd >= 0) {
        struct epoll_event unused = {0};
        (void)epoll_ctl(self->epfd, EPOLL_CTL_DEL, reader->fd, &unused); /* gone if fd closed */
    }
    PyObject *owner = reader->owner;
    reader->owner = NULL;
    reader->polled = 0;
    reader->fd = -1;
    if (PySet_Discard(self->members, (PyObject *)reader) < 0) PyErr_WriteUnraisable(self->members);
    return owner != NULL ? owner : Py_NewRef(Py_None);
}

static PyObject *
LinePoller_add(LinePoller *self, PyObject *args)
{
    PyObject *owner;
    LineReader *reader;
    int fd;
    double last_request, line_started;
    if (!PyArg_ParseTuple(args, "O!iOdd:add", &LineReaderType, &reader, &fd, &owner,
                          &last_request, &line_started)) {
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
    struct epoll_event event = {.events = EPOLLIN, .data.ptr = reader};
    if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &event) < 0) return PyErr_SetFromErrno(PyExc_OSError);
    if (PySet_Add(self->members, (PyObject *)reader) < 0) {
        (void)epoll_ctl(self->epfd, EPOLL_CTL_DEL, fd, &event);
        return NULL;
    }
    reader->polled = 1;
    reader->fd = fd;
    Py_XSETREF(reader->owner, Py_NewRef(owner));
    reader->last_request = last_request;
    reader->line_started = line_started;
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
    if (!member) Py_RETURN_FALSE;
    Py_DECREF(poller_release(self, (LineReader *)arg));
    Py_RETURN_TRUE;
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

/* One ready connection: recv, lines, send.  Returns 0 (keep polling it) or
 * the HAND_* kind; *unsent gets the replies the socket did not take. */
static int
poll_one(LinePoller *self, LineReader *reader, double now, Replies *out, LineCounts *counts,
         PyObject **unsent)
{
    PyObject *pending = PyObject_GetAttr(reader->framing, str_partial);
    if (pending == NULL) return HAND_FAILED;
    if (!PyBytes_CheckExact(pending)) {
        Py_DECREF(pending);
        PyErr_SetString(PyExc_TypeError, "framing.partial must be bytes");
        return HAND_FAILED;
    }
    Py_ssize_t held = PyBytes_GET_SIZE(pending);
    if (poller_buffer(self, held + RECV_SIZE) < 0) {
        Py_DECREF(pending);
        return HAND_FAILED;
    }
    memcpy(self->buffer, PyBytes_AS_STRING(pending), (size_t)held);
    Py_DECREF(pending);
    ssize_t got = recv(reader->fd, self->buffer + held, RECV_SIZE, 0);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    if (got <= 0) return HAND_CLOSED;  /* EOF or an error: the transport reads it again */

    long long replied = counts->replied;
    int fd = reader->fd;
    long code = split_lines(reader, self->buffer, held + got, NULL, out, counts);
    int kind = 0;
    if (!reader->polled) {
        /* Python took the connection back while its handlers ran: the replies so far
         * go to the owner, for its transport, and the poller is done with it. */
        PyObject *error_type, *error_value, *error_tb;
        PyErr_Fetch(&error_type, &error_value, &error_tb);
        *unsent = PyBytes_FromStringAndSize(out->data, out->len);
        if (*unsent == NULL) PyErr_WriteUnraisable((PyObject *)self);
        observe_replies(self->observe, counts->replied - replied, now);
        PyErr_Restore(error_type, error_value, error_tb);
        replies_free(out);
        return code == LINES_FAILED ? HAND_FAILED : code < 0 ? HAND_UNUSUAL : HAND_BLOCKED;
    }
    if (code == LINES_FAILED) {
        kind = HAND_FAILED;
    } else if (code < 0) {
        kind = HAND_UNUSUAL;
    } else if (code & LINES_TAKEN) {
        reader->last_request = now;
        reader->line_started = code & PARTIAL_LEFT ? now : -1.0;
    } else if (code == 0) {
        reader->line_started = -1.0;
    } else if (reader->line_started < 0) {
        reader->line_started = now;
    }
    if (out->len > 0) {
        PyObject *error_type, *error_value, *error_tb;
        PyErr_Fetch(&error_type, &error_value, &error_tb);  /* kept for HAND_FAILED */
        ssize_t sent = send(fd, out->data, (size_t)out->len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (sent < 0) sent = 0;  /* EAGAIN or an error: the transport writes it, or reports it */
        if (sent < out->len) {
            *unsent = PyBytes_FromStringAndSize(out->data + sent, out->len - sent);
            if (*unsent == NULL) {
                PyErr_WriteUnraisable((PyObject *)self);
                kind = HAND_FAILED;
            } else if (!kind) {
                kind = HAND_BLOCKED;
            }
        }
        observe_replies(self->observe, counts->replied - replied, now);
        PyErr_Restore(error_type, error_value, error_tb);
        replies_free(out);
    }
    return kind;
}

/* Serve the connections ready now, once each.  Returns how many were ready,
 * or -1 with a Python error set. */
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
    self->busy = 1;
    LineReader *ready[POLL_EVENTS];
    for (int i = 0; i < count; i++) {
        ready[i] = (LineReader *)self->events[i].data.ptr;
        Py_INCREF(ready[i]);  /* alive even if a handler makes Python let go of it */
    }
    /* (owner, kind, unsent) for each connection handed back, told after the loop. */
    PyObject *handed[POLL_EVENTS];
    int kinds[POLL_EVENTS], handbacks = 0;
    PyObject *unsent_of[POLL_EVENTS];
    LineCounts counts = {0, 0, 0, 0};
    Replies out;
    replies_init(&out);
    double now = monotonic_now();
    for (int i = 0; i < count; i++) {
        LineReader *reader = ready[i];
        if (!reader->polled) continue;  /* let go of by a handler earlier in this batch */
        PyObject *unsent = NULL;
        PyObject *owner = Py_NewRef(reader->owner != NULL ? reader->owner : Py_None);
        int kind = poll_one(self, reader, now, &out, &counts, &unsent);
        if (!kind) {
            Py_DECREF(owner);
            continue;
        }
        if (kind == HAND_FAILED && PyErr_Occurred()) PyErr_WriteUnraisable((PyObject *)reader);
        if (reader->polled) Py_DECREF(poller_release(self, reader));
        handed[handbacks] = owner;
        kinds[handbacks] = kind;
        unsent_of[handbacks] = unsent;
        handbacks++;
    }
    replies_free(&out);
    if (flush_line_counts(self->counters, &counts) < 0) PyErr_WriteUnraisable(self->counters);
    self->busy = 0;
    for (int i = 0; i < handbacks; i++) {
        PyObject *unsent = unsent_of[i] != NULL ? unsent_of[i] : PyBytes_FromStringAndSize(NULL, 0);
        PyObject *kind = PyLong_FromLong(kinds[i]);
        if (unsent != NULL && kind != NULL) {
            PyObject *call[3] = {handed[i], kind, unsent};
            PyObject *result = PyObject_VectorcallMethod(str_from_poller, call, 3, NULL);
            if (result == NULL) PyErr_WriteUnraisable(handed[i]);
            Py_XDECREF(result);
        } else {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        Py_XDECREF(unsent);
        Py_XDECREF(kind);
        Py_DECREF(handed[i]);
    }
    for (int i = 0; i < count; i++) Py_DECREF(ready[i]);
    return count;
}

static PyObject *
LinePoller_poll(LinePoller *self, PyObject *Py_UNUSED(ignored))
{
    for (int round = 0; round < POLL_ROUNDS; round++) {
        int count = poll_once(self);
        if (count < 0) return NULL;
        if (count == 0) break;
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
            Py_DECREF(poller_release(self, (LineReader *)PyList_GET_ITEM(readers, i)));
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
    static char *keywords[] = {"counters", "observe", NULL};
    PyObject *counters, *observe = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|O:LinePoller", keywords, &counters,
                                     &observe)) {
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
     "add(reader, fd, owner, last_request, line_started)\n\n"
     "Read the connection on socket fd from now on (its transport must not read it,\n"
     "nor have bytes waiting to be written).  owner._from_poller(kind, unsent) is\n"
     "called when the poller hands it back: 1 the peer closed or the socket failed,\n"
     "2 a send left `unsent`, 3 a line for Python (see reader.unusual()), 4 a Python\n"
     "error (reported as unraisable).  last_request and line_started: the\n"
     "connection's timestamps so far (-1: none)."},
    {"remove", (PyCFunction)LinePoller_remove, METH_O,
     "remove(reader) -> bool\n\nStop reading that connection (its owner is not told)."},
    {"poll", (PyCFunction)LinePoller_poll, METH_NOARGS,
     "poll()\n\nServe every ready connection, and again those ready since, up to 4 rounds\n"
     "(the event loop's reader callback)."},
    {"fileno", (PyCFunction)LinePoller_fileno, METH_NOARGS, "The epoll fd (-1 once closed)."},
    {"count", (PyCFunction)LinePoller_len_method, METH_NOARGS, "How many connections it reads."},
    {"close", (PyCFunction)LinePoller_close, METH_NOARGS,
     "close()\n\nLet go of every connection and close the epoll fd."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LinePollerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "udpkit._fastpath.LinePoller",
    .tp_doc = "LinePoller(counters, observe=None): TCP connections with a LineReader, read "
              "from one epoll set in C.",
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
    if ((str_from_poller = PyUnicode_InternFromString("_from_poller")) == NULL) return -1;
    if ((str_partial = PyUnicode_InternFromString("partial")) == NULL) return -1;
    if (PyType_Ready(&LinePollerType) < 0) return -1;
    return PyModule_AddObjectRef(module, "LinePoller", (PyObject *)&LinePollerType);
}
