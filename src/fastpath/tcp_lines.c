/* LineReader: one TCP connection's line framing in C (see module.c). */

#include "fastpath.h"

static PyObject *str_received, *str_replied, *str_no_reply, *str_dropped_empty, *str_partial,
    *str_max_line;

static const char ERR_EMPTY_LINE[] = "error: empty request\n";

/* Ask admission.take for a grant of tokens for this connection's source: one
 * call into Python per grant, not per line.  Returns the tokens granted (0:
 * rate limited), or -1 with a Python error set. */
static long
take_tokens(LineReader *self)
{
    PyObject *now = PyFloat_FromDouble(monotonic_now());
    if (now == NULL) return -1;
    PyObject *args[3] = {self->host, now, self->take_want};
    PyObject *granted = PyObject_Vectorcall(self->take, args, 3, NULL);
    Py_DECREF(now);
    if (granted == NULL) return -1;
    long count = PyLong_AsLong(granted);
    Py_DECREF(granted);
    if (count == -1 && PyErr_Occurred()) return -1;
    return count < 0 ? 0 : count;
}

int
replies_put(Replies *out, const char *bytes, Py_ssize_t size)
{
    if (out->len + size > out->cap) {
        Py_ssize_t cap = out->cap * 2;
        while (cap < out->len + size) cap *= 2;
        char *grown = out->heap ? PyMem_Realloc(out->data, (size_t)cap) : PyMem_Malloc((size_t)cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        if (!out->heap) memcpy(grown, out->data, (size_t)out->len);
        out->data = grown;
        out->cap = cap;
        out->heap = 1;
    }
    memcpy(out->data + out->len, bytes, (size_t)size);
    out->len += size;
    return 0;
}

static int
add_counter(PyObject *counters, PyObject *name, long long delta)
{
    if (delta == 0) return 0;
    PyObject *old = PyObject_GetAttr(counters, name);
    if (old == NULL) return -1;
    PyObject *add = PyLong_FromLongLong(delta);
    PyObject *sum = add ? PyNumber_Add(old, add) : NULL;
    Py_DECREF(old);
    Py_XDECREF(add);
    if (sum == NULL) return -1;
    int status = PyObject_SetAttr(counters, name, sum);
    Py_DECREF(sum);
    return status;
}

/* The pending exception, normalised, with its traceback attached (a new reference). */
static PyObject *
take_exception(void)
{
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL) PyException_SetTraceback(value, traceback);
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    if (value == NULL) value = Py_NewRef(Py_None);
    return value;
}

int
flush_line_counts(PyObject *counters, LineCounts *counts)
{
    int status = add_counter(counters, str_received, counts->received) < 0 ||
                 add_counter(counters, str_replied, counts->replied) < 0 ||
                 add_counter(counters, str_no_reply, counts->no_reply) < 0 ||
                 add_counter(counters, str_dropped_empty, counts->empty) < 0
                     ? -1
                     : 0;
    memset(counts, 0, sizeof(*counts));
    return status;
}

/* The lines of buf[0:size] (framing.partial followed by the bytes just
 * received): call the handler per line, put the framed replies in *out,
 * add to *counts, and leave framing.partial as feed() documents.  Returns
 * what feed() returns, or LINES_FAILED.  ``source``: the bytes object buf
 * points into, reused for the unfinished rest when nothing was taken (may be
 * NULL).  buf must not change while handlers run. */
long
split_lines(LineReader *self, const char *buf, Py_ssize_t size, PyObject *source, Replies *out,
            LineCounts *counts)
{
    PyObject *handler = self->handler, *peer = self->peer;
    Py_INCREF(handler);
    Py_INCREF(peer);
    Py_ssize_t pos = 0, max_line = self->max_line;
    long long lines = 0;
    long code = LINES_FAILED;
    int status = LINES_DONE;
    PyObject *extra = NULL, *rest = NULL;

    while (pos < size) {
        const char *newline = memchr(buf + pos, '\n', (size_t)(size - pos));
        if (newline == NULL) break;
        Py_ssize_t end = newline - buf, length = end - pos;
        if (length > 0 && buf[end - 1] == '\r') length--;
        if (length > max_line) {
            status = LINES_OVERSIZE;
            pos = size;
            break;
        }
        if (length == 4 && memcmp(buf + pos, "exit", 4) == 0) {
            status = LINES_EXIT;
            pos = end + 1;
            break;
        }
        if (length > 0 && self->take != NULL) {
            if (self->credit > 0) {
                self->credit--;  /* a token from this connection's last grant */
            } else {
                long granted = take_tokens(self);
                if (granted < 0) {  /* admission.take raised: like a handler that raised */
                    lines++;
                    counts->received++;
                    pos = end + 1;
                    status = LINES_ERROR;
                    extra = take_exception();
                    break;
                }
                if (granted == 0) {
                    status = LINES_LIMITED;  /* Python answers this line, and the rest */
                    break;
                }
                self->credit = granted - 1;
            }
        }
        lines++;
        counts->received++;
        if (length == 0) {
            counts->empty++;
            pos = end + 1;
            if (replies_put(out, ERR_EMPTY_LINE, (Py_ssize_t)sizeof(ERR_EMPTY_LINE) - 1) < 0)
                goto done;
            continue;
        }
        PyObject *request = PyBytes_FromStringAndSize(buf + pos, length);
        if (request == NULL) goto done;
        pos = end + 1;
        PyObject *call[2] = {request, peer};
        PyObject *result = PyObject_Vectorcall(handler, call, 2, NULL);
        Py_DECREF(request);
        if (result == NULL) {
            status = LINES_ERROR;
            extra = take_exception();
            break;
        }
        if (PyBytes_CheckExact(result)) {
            int failed = replies_put(out, PyBytes_AS_STRING(result), PyBytes_GET_SIZE(result)) < 0 ||
                         replies_put(out, "\n", 1) < 0;
            Py_DECREF(result);
            if (failed) goto done;
            counts->replied++;
        } else if (result == Py_None) {
            Py_DECREF(result);
            counts->no_reply++;
        } else {
            status = LINES_RESULT;  /* an awaitable, a bytes-like object or a wrong type */
            extra = result;
            break;
        }
    }
    if (status == LINES_DONE && size - pos > max_line + 1) {
        status = LINES_OVERSIZE;  /* an unfinished line already over the limit (+ its "\r") */
        pos = size;
    }
    rest = pos == 0 && source != NULL ? Py_NewRef(source)
                                      : PyBytes_FromStringAndSize(buf + pos, size - pos);
    if (rest == NULL) goto done;
    if (status == LINES_DONE) {
        if (PyObject_SetAttr(self->framing, str_partial, rest) < 0) goto done;
        code = (lines > 0 ? LINES_TAKEN : 0) | (PyBytes_GET_SIZE(rest) > 0 ? PARTIAL_LEFT : 0);
    } else {
        PyObject *nothing = PyBytes_FromStringAndSize(NULL, 0);
        int failed = nothing == NULL || PyObject_SetAttr(self->framing, str_partial, nothing) < 0;
        Py_XDECREF(nothing);
        if (failed) goto done;
        Py_XSETREF(self->rest, rest);
        Py_XSETREF(self->extra, extra);
        rest = extra = NULL;
        self->status = status;
        self->handled = lines;
        code = -status;
    }

done:
    Py_XDECREF(rest);
    Py_XDECREF(extra);
    Py_DECREF(handler);
    Py_DECREF(peer);
    return code;
}

/* Time each of ``replied`` replies took since ``arrived`` (when latency is observed). */
void
observe_replies(PyObject *observe, long long replied, double arrived)
{
    if (observe == NULL || replied <= 0) return;
    PyObject *elapsed = PyFloat_FromDouble(monotonic_now() - arrived);
    if (elapsed == NULL) {
        PyErr_WriteUnraisable(observe);
        return;
    }
    for (long long i = 0; i < replied; i++) call_quietly(observe, &elapsed, 1);
    Py_DECREF(elapsed);
}

void
replies_init(Replies *out)
{
    out->data = out->stack;
    out->len = 0;
    out->cap = (Py_ssize_t)sizeof(out->stack);
    out->heap = 0;
}

void
replies_free(Replies *out)
{
    if (out->heap) PyMem_Free(out->data);
    replies_init(out);
}

static PyObject *
LineReader_feed(LineReader *self, PyObject *data)
{
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "data must be bytes");
        return NULL;
    }
    if (self->polled) {
        PyErr_SetString(PyExc_RuntimeError, "this connection is read by a LinePoller");
        return NULL;
    }
    PyObject *pending = PyObject_GetAttr(self->framing, str_partial);
    if (pending == NULL) return NULL;
    if (!PyBytes_CheckExact(pending)) {
        Py_DECREF(pending);
        PyErr_SetString(PyExc_TypeError, "framing.partial must be bytes");
        return NULL;
    }
    PyObject *source;  /* owned: pending + data */
    if (PyBytes_GET_SIZE(pending) == 0) {
        source = Py_NewRef(data);
    } else {
        Py_ssize_t a = PyBytes_GET_SIZE(pending), b = PyBytes_GET_SIZE(data);
        source = PyBytes_FromStringAndSize(NULL, a + b);
        if (source != NULL) {
            memcpy(PyBytes_AS_STRING(source), PyBytes_AS_STRING(pending), (size_t)a);
            memcpy(PyBytes_AS_STRING(source) + a, PyBytes_AS_STRING(data), (size_t)b);
        }
    }
    Py_DECREF(pending);
    if (source == NULL) return NULL;

    double arrived = self->observe != NULL ? monotonic_now() : 0.0;
    PyObject *outcome = NULL;
    LineCounts counts = {0, 0, 0, 0};
    Replies out;
    replies_init(&out);
    /* buf: immutable bytes, safe while handlers run */
    long code = split_lines(self, PyBytes_AS_STRING(source), PyBytes_GET_SIZE(source), source,
                            &out, &counts);
    long long replied = counts.replied;
    /* Counters first, so they are exact even if the write below raises. */
    if (flush_line_counts(self->counters, &counts) < 0 || code == LINES_FAILED) goto fail;
    if (out.len > 0) {
        PyObject *wire = PyBytes_FromStringAndSize(out.data, out.len);
        if (wire == NULL) goto fail;
        PyObject *written = PyObject_CallOneArg(self->write, wire);
        Py_DECREF(wire);
        if (written == NULL) goto fail;
        Py_DECREF(written);
        observe_replies(self->observe, replied, arrived);
    }
    outcome = PyLong_FromLong(code);

fail:
    Py_DECREF(source);
    replies_free(&out);
    return outcome;
}

static PyObject *
LineReader_unusual(LineReader *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *rest = self->rest != NULL ? self->rest : PyBytes_FromStringAndSize(NULL, 0);
    if (rest == NULL) return NULL;
    PyObject *extra = self->extra != NULL ? self->extra : Py_NewRef(Py_None);
    self->rest = self->extra = NULL;
    PyObject *outcome = Py_BuildValue("(iNLN)", self->status, rest, self->handled, extra);
    self->status = LINES_DONE;
    self->handled = 0;
    return outcome;
}

static int
LineReader_init(LineReader *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"handler", "peer",    "counters", "framing",
                               "write",   "observe", "take",     NULL};
    PyObject *handler, *peer, *counters, *framing, *write, *observe = Py_None, *take = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO|OO:LineReader", keywords, &handler,
                                     &peer, &counters, &framing, &write, &observe, &take)) {
        return -1;
    }
    PyObject *host = NULL;
    if (take != Py_None) {  /* the peer's host, for admission.take */
        PyObject *address = PyTuple_Check(peer) && PyTuple_GET_SIZE(peer) > 0
                                ? PyTuple_GET_ITEM(peer, 0)
                                : NULL;
        if (address == NULL || !PyTuple_Check(address) || PyTuple_GET_SIZE(address) < 1) {
            PyErr_SetString(PyExc_TypeError, "peer must be a Peer ((host, port, ...), transport)");
            return -1;
        }
        host = PyTuple_GET_ITEM(address, 0);
    }
    PyObject *want = PyLong_FromLong(16);
    if (want == NULL) return -1;
    Py_XSETREF(self->take_want, want);
    PyObject *limit = PyObject_GetAttr(framing, str_max_line);
    if (limit == NULL) return -1;
    Py_ssize_t max_line = PyLong_AsSsize_t(limit);
    Py_DECREF(limit);
    if (max_line == -1 && PyErr_Occurred()) return -1;
    Py_XSETREF(self->handler, Py_NewRef(handler));
    Py_XSETREF(self->peer, Py_NewRef(peer));
    Py_XSETREF(self->counters, Py_NewRef(counters));
    Py_XSETREF(self->framing, Py_NewRef(framing));
    Py_XSETREF(self->write, Py_NewRef(write));
    Py_XSETREF(self->observe, observe == Py_None ? NULL : Py_NewRef(observe));
    self->max_line = max_line;
    Py_XSETREF(self->take, take == Py_None ? NULL : Py_NewRef(take));
    Py_XSETREF(self->host, host == NULL ? NULL : Py_NewRef(host));
    self->credit = 0;
    self->fd = -1;
    self->last_request = self->line_started = -1.0;
    return 0;
}

static int
LineReader_traverse(LineReader *self, visitproc visit, void *arg)
{
    Py_VISIT(self->handler);
    Py_VISIT(self->peer);
    Py_VISIT(self->counters);
    Py_VISIT(self->framing);
    Py_VISIT(self->write);
    Py_VISIT(self->observe);
    Py_VISIT(self->rest);
    Py_VISIT(self->extra);
    Py_VISIT(self->owner);
    Py_VISIT(self->take);
    Py_VISIT(self->take_want);
    Py_VISIT(self->host);
    return 0;
}

static int
LineReader_clear(LineReader *self)
{
    Py_CLEAR(self->handler);
    Py_CLEAR(self->peer);
    Py_CLEAR(self->counters);
    Py_CLEAR(self->framing);
    Py_CLEAR(self->write);
    Py_CLEAR(self->observe);
    Py_CLEAR(self->rest);
    Py_CLEAR(self->extra);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->take);
    Py_CLEAR(self->take_want);
    Py_CLEAR(self->host);
    return 0;
}

static void
LineReader_dealloc(LineReader *self)
{
    PyObject_GC_UnTrack(self);
    LineReader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef LineReader_methods[] = {
    {"feed", (PyCFunction)LineReader_feed, METH_O,
     "feed(data) -> int\n\n"
     "Split framing.partial + data into lines (\\n or \\r\\n), call handler(line, peer)\n"
     "for each, write the replies (each followed by \\n, an empty line answered with\n"
     "the error line) with one write(), and add received, replied, no_reply and\n"
     "dropped_empty to counters.  Returns, when every complete line was handled,\n"
     "2 if there was one or more | 1 if an unfinished line is left in framing.partial;\n"
     "or -status when it stopped at a line for Python (see unusual()): -1 an `exit`\n"
     "line, -2 a line over framing.max_line, -3 a result neither bytes nor None,\n"
     "-4 the handler raised (or, with take, admission.take did), -5 a line of a\n"
     "source over its rate limit (take granted no token).  The replies before that\n"
     "line are written."},
    {"unusual", (PyCFunction)LineReader_unusual, METH_NOARGS,
     "unusual() -> (status, rest, handled, extra)\n\n"
     "Where the last feed() stopped: rest, the bytes after that line (for 5, from\n"
     "that line on; framing.partial is left empty); handled, the requests taken (the\n"
     "stopping line included for 3 and 4); extra, the handler's result (3) or\n"
     "exception (4)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef LineReader_members[] = {
    {"polled", T_INT, offsetof(LineReader, polled), READONLY,
     "Whether a LinePoller reads this connection now."},
    {"last_request", T_DOUBLE, offsetof(LineReader, last_request), READONLY,
     "While polled: monotonic time of the last complete line (-1: none yet)."},
    {"line_started", T_DOUBLE, offsetof(LineReader, line_started), READONLY,
     "While polled: when the unfinished line began (-1: none)."},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject LineReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "udpkit._fastpath.LineReader",
    .tp_doc = "LineReader(handler, peer, counters, framing, write, observe=None, take=None): "
              "one TCP connection's line framing and sync handler calls in C.  take: "
              "admission.take for a source under a rate limit (tokens in grants of 16).",
    .tp_basicsize = sizeof(LineReader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)LineReader_init,
    .tp_dealloc = (destructor)LineReader_dealloc,
    .tp_traverse = (traverseproc)LineReader_traverse,
    .tp_clear = (inquiry)LineReader_clear,
    .tp_methods = LineReader_methods,
    .tp_members = LineReader_members,
};

int
fastpath_add_line_reader(PyObject *module)
{
#define INTERN(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) return -1
    INTERN(str_received, "received");
    INTERN(str_replied, "replied");
    INTERN(str_no_reply, "no_reply");
    INTERN(str_dropped_empty, "dropped_empty");
    INTERN(str_partial, "partial");
    INTERN(str_max_line, "max_line");
#undef INTERN
    if (PyType_Ready(&LineReaderType) < 0) return -1;
    return PyModule_AddObjectRef(module, "LineReader", (PyObject *)&LineReaderType);
}
