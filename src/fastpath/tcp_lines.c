/* LineReader: one TCP connection's line splitting and sync handler calls in C
 * (see module.c).  It keeps no state of the connection between calls but the
 * rate-limit credit: the partial line is lent to it per call (or, by a
 * LinePoller, while polled), and what it read goes back as a LinesReport.
 *
 * Two streamed framings (udpkit/core/framing.py, held equal by property tests):
 * lines (length_prefix 0: "\n" or "\r\n" ends a message, "\n" ends a reply) and
 * length-prefixed messages (length_prefix n, given by Python: each message and
 * reply after its length in n bytes, network order; len16 is n = 2, RFC 1035
 * 4.2.2 / RFC 7766 8).  The "line" below is a message of either. */

#include "fastpath.h"

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

void
lines_report_clear(LinesReport *report)
{
    Py_CLEAR(report->rest);
    Py_CLEAR(report->extra);
    report->status = LINES_DONE;
    report->taken = 0;
}

/* Take a token for one line of a rate-limited source.  Returns 1 (served),
 * 0 (no token: rate limited) or -1 (admission.take raised). */
static int
take_token(LineReader *self)
{
    if (self->credit > 0) {
        self->credit--;  /* a token from this connection's last grant */
        return 1;
    }
    PyObject *now = PyFloat_FromDouble(monotonic_now());
    if (now == NULL) return -1;
    long granted = take_grant(self->take, self->host, now, self->grant);
    Py_DECREF(now);
    if (granted <= 0) return (int)granted;
    self->credit = granted - 1;
    return 1;
}

/* The lines of buf[0:size] (the partial line followed by the bytes just
 * received): call the handler per line, put the framed replies in *out, add
 * to delta, and fill *report.  ``source``: the bytes object buf points into,
 * reused for the rest when nothing was taken (may be NULL).  buf must not
 * change while handlers run. */
int
split_lines(LineReader *self, const char *buf, Py_ssize_t size, PyObject *source, Replies *out,
            long long delta[C_COUNT], LinesReport *report)
{
    PyObject *handler = self->handler, *peer = self->peer;
    Py_INCREF(handler);
    Py_INCREF(peer);
    Py_ssize_t pos = 0, max_line = self->max_line;
    Py_ssize_t exit_size = self->exit_line != NULL ? PyBytes_GET_SIZE(self->exit_line) : -1;
    const char *exit_line = self->exit_line != NULL ? PyBytes_AS_STRING(self->exit_line) : NULL;
    int prefixed = self->length_prefix;
    Py_ssize_t max_reply = prefixed ? ((Py_ssize_t)1 << (8 * prefixed)) - 1 : PY_SSIZE_T_MAX;
    long long lines = 0;
    int status = LINES_DONE, failed = -1;
    PyObject *extra = NULL;

    while (pos < size) {
        /* The message is buf[start:start + length]; the next one begins at next. */
        Py_ssize_t start, length, next;
        if (prefixed) {
            if (size - pos < prefixed) break;
            length = 0;
            for (int i = 0; i < prefixed; i++) length = length << 8 | (unsigned char)buf[pos + i];
            if (length > max_line) {  /* known from the prefix: its bytes are not awaited */
                status = LINES_OVERSIZE;
                pos = size;
                break;
            }
            start = pos + prefixed;
            if (size - start < length) break;
            next = start + length;
        } else {
            const char *newline = memchr(buf + pos, '\n', (size_t)(size - pos));
            if (newline == NULL) break;
            Py_ssize_t end = newline - buf;
            start = pos;
            length = end - pos;
            next = end + 1;
            if (length > 0 && buf[end - 1] == '\r') length--;
            if (length > max_line) {
                status = LINES_OVERSIZE;
                pos = size;
                break;
            }
        }
        if (length == exit_size && memcmp(buf + start, exit_line, (size_t)exit_size) == 0) {
            status = LINES_EXIT;
            pos = next;
            break;
        }
        if (length == 0 && self->empty_reply == NULL) {
            status = LINES_EMPTY;  /* Python answers it (and closes) */
            break;
        }
        if (length > 0 && self->take != NULL) {
            int token = take_token(self);
            if (token < 0) {  /* admission.take raised: like a handler that raised */
                lines++;
                delta[C_RECEIVED]++;
                pos = next;
                status = LINES_ERROR;
                extra = take_exception();
                break;
            }
            if (token == 0) {
                status = LINES_LIMITED;  /* Python answers this line, and the rest */
                break;
            }
        }
        lines++;
        delta[C_RECEIVED]++;
        if (length == 0) {
            delta[C_EMPTY]++;
            pos = next;
            if (replies_put(out, PyBytes_AS_STRING(self->empty_reply),
                            PyBytes_GET_SIZE(self->empty_reply)) < 0)
                goto done;
            continue;
        }
        PyObject *request = PyBytes_FromStringAndSize(buf + start, length);
        if (request == NULL) goto done;
        pos = next;
        PyObject *call[2] = {request, peer};
        PyObject *result = PyObject_Vectorcall(handler, call, 2, NULL);
        Py_DECREF(request);
        if (result == NULL) {
            status = LINES_ERROR;
            extra = take_exception();
            break;
        }
        if (PyBytes_CheckExact(result) && PyBytes_GET_SIZE(result) > max_reply) {
            status = LINES_RESULT;  /* too long for its prefix: Python's handler error */
            extra = result;
            break;
        }
        if (PyBytes_CheckExact(result)) {
            Py_ssize_t reply_size = PyBytes_GET_SIZE(result);
            int bad;
            if (prefixed) {
                char prefix[MAX_LENGTH_PREFIX];
                for (int i = 0; i < prefixed; i++)
                    prefix[i] = (char)(reply_size >> (8 * (prefixed - 1 - i)) & 0xff);
                bad = replies_put(out, prefix, prefixed) < 0 ||
                      replies_put(out, PyBytes_AS_STRING(result), reply_size) < 0;
            } else {
                bad = replies_put(out, PyBytes_AS_STRING(result), reply_size) < 0 ||
                      replies_put(out, "\n", 1) < 0;
            }
            Py_DECREF(result);
            if (bad) goto done;
            delta[C_REPLIED]++;
        } else if (result == Py_None) {
            Py_DECREF(result);
            delta[C_NO_REPLY]++;
        } else {
            status = LINES_RESULT;  /* an awaitable, a bytes-like object or a wrong type */
            extra = result;
            break;
        }
    }
    if (status == LINES_DONE && !prefixed && size - pos > max_line + 1) {
        status = LINES_OVERSIZE;  /* an unfinished line already over the limit (+ its "\r") */
        pos = size;
    }
    PyObject *rest = pos == 0 && source != NULL ? Py_NewRef(source)
                                                : PyBytes_FromStringAndSize(buf + pos, size - pos);
    if (rest == NULL) goto done;
    report->status = status;
    report->taken = lines;
    Py_XSETREF(report->rest, rest);
    Py_XSETREF(report->extra, extra);
    extra = NULL;
    failed = 0;

done:
    Py_XDECREF(extra);
    Py_DECREF(handler);
    Py_DECREF(peer);
    return failed;
}

/* After a write: if the transport still holds bytes, kept(held, wire, None), so
 * that replies an abort throws away can be told from those the kernel took. */
static int
keep_if_held(LineReader *self, PyObject *wire)
{
    PyObject *held = PyObject_CallNoArgs(self->buffered);
    if (held == NULL) return -1;
    int some = PyObject_IsTrue(held);
    if (some > 0) {
        PyObject *args[3] = {held, wire, Py_None};
        PyObject *result = PyObject_Vectorcall(self->kept, args, 3, NULL);
        if (result == NULL) some = -1;
        Py_XDECREF(result);
    }
    Py_DECREF(held);
    return some < 0 ? -1 : 0;
}

static PyObject *
LineReader_feed(LineReader *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || !PyBytes_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "feed(partial, data) takes two bytes");
        return NULL;
    }
    if (self->polled) {
        PyErr_SetString(PyExc_RuntimeError, "this connection is read by a LinePoller");
        return NULL;
    }
    PyObject *pending = args[0], *data = args[1];
    PyObject *source;  /* owned: pending + data */
    if (PyBytes_GET_SIZE(pending) == 0) {
        source = Py_NewRef(data);
    } else {
        Py_ssize_t a = PyBytes_GET_SIZE(pending), b = PyBytes_GET_SIZE(data);
        source = PyBytes_FromStringAndSize(NULL, a + b);
        if (source == NULL) return NULL;
        memcpy(PyBytes_AS_STRING(source), PyBytes_AS_STRING(pending), (size_t)a);
        memcpy(PyBytes_AS_STRING(source) + a, PyBytes_AS_STRING(data), (size_t)b);
    }

    double arrived = self->observe != NULL ? monotonic_now() : 0.0;
    PyObject *outcome = NULL;
    long long delta[C_COUNT] = {0};
    LinesReport report = {LINES_DONE, 0, NULL, NULL};
    Replies out;
    replies_init(&out);
    /* buf: immutable bytes, safe while handlers run */
    int failed = split_lines(self, PyBytes_AS_STRING(source), PyBytes_GET_SIZE(source), source,
                             &out, delta, &report);
    long long replied = delta[C_REPLIED];
    /* Counters first, so they are exact even if the write below raises. */
    if (flush_counters(self->counters, delta) < 0 || failed) goto fail;
    if (out.len > 0) {
        PyObject *wire = PyBytes_FromStringAndSize(out.data, out.len);
        if (wire == NULL) goto fail;
        PyObject *written = PyObject_CallOneArg(self->write, wire);
        if (written == NULL) {
            Py_DECREF(wire);
            goto fail;
        }
        Py_DECREF(written);
        if (self->buffered != NULL && keep_if_held(self, wire) < 0) {
            Py_DECREF(wire);
            goto fail;
        }
        Py_DECREF(wire);
        observe_replies(self->observe, replied, arrived);
    }
    PyObject *status = PyLong_FromLong(report.status), *taken = PyLong_FromLongLong(report.taken);
    if (status != NULL && taken != NULL) {
        outcome = PyTuple_Pack(4, status, taken, report.rest,
                               report.extra != NULL ? report.extra : Py_None);
    }
    Py_XDECREF(status);
    Py_XDECREF(taken);

fail:
    lines_report_clear(&report);
    Py_DECREF(source);
    replies_free(&out);
    return outcome;
}

static int
LineReader_init(LineReader *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"handler", "peer", "counters", "write", "observe", "take",
                               "max_line", "exit_line", "empty_reply", "grant", "buffered",
                               "kept", "length_prefix", NULL};
    PyObject *handler, *peer, *counters, *write, *observe = Py_None, *take = Py_None;
    PyObject *exit_line = NULL, *empty_reply = NULL, *grant = NULL;
    PyObject *buffered = Py_None, *kept = Py_None;
    Py_ssize_t max_line = -1;
    int length_prefix = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO|OO$nOOO!OOi:LineReader", keywords,
                                     &handler, &peer, &counters, &write, &observe, &take,
                                     &max_line, &exit_line, &empty_reply, &PyLong_Type,
                                     &grant, &buffered, &kept, &length_prefix)) {
        return -1;
    }
    if ((exit_line != NULL && exit_line != Py_None && !PyBytes_Check(exit_line)) ||
        (empty_reply != NULL && empty_reply != Py_None && !PyBytes_Check(empty_reply))) {
        PyErr_SetString(PyExc_TypeError, "exit_line and empty_reply are bytes or None");
        return -1;
    }
    if (length_prefix < 0 || length_prefix > MAX_LENGTH_PREFIX) {
        PyErr_SetString(PyExc_ValueError, "length_prefix is 0 (lines) to 4 bytes");
        return -1;
    }
    if ((buffered == Py_None) != (kept == Py_None)) {
        PyErr_SetString(PyExc_TypeError, "LineReader takes buffered and kept together");
        return -1;
    }
    if (max_line < 0 || exit_line == NULL || empty_reply == NULL || grant == NULL) {
        PyErr_SetString(PyExc_TypeError,
                        "LineReader needs max_line, exit_line, empty_reply and grant");
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
    Py_XSETREF(self->handler, Py_NewRef(handler));
    Py_XSETREF(self->peer, Py_NewRef(peer));
    Py_XSETREF(self->counters, Py_NewRef(counters));
    Py_XSETREF(self->write, Py_NewRef(write));
    Py_XSETREF(self->buffered, buffered == Py_None ? NULL : Py_NewRef(buffered));
    Py_XSETREF(self->kept, kept == Py_None ? NULL : Py_NewRef(kept));
    Py_XSETREF(self->observe, observe == Py_None ? NULL : Py_NewRef(observe));
    self->max_line = max_line;
    self->length_prefix = length_prefix;
    Py_XSETREF(self->exit_line, exit_line == Py_None ? NULL : Py_NewRef(exit_line));
    Py_XSETREF(self->empty_reply, empty_reply == Py_None ? NULL : Py_NewRef(empty_reply));
    Py_XSETREF(self->grant, Py_NewRef(grant));
    Py_XSETREF(self->take, take == Py_None ? NULL : Py_NewRef(take));
    Py_XSETREF(self->host, host == NULL ? NULL : Py_NewRef(host));
    self->credit = 0;
    self->fd = -1;
    return 0;
}

static int
LineReader_traverse(LineReader *self, visitproc visit, void *arg)
{
    Py_VISIT(self->handler);
    Py_VISIT(self->peer);
    Py_VISIT(self->counters);
    Py_VISIT(self->write);
    Py_VISIT(self->buffered);
    Py_VISIT(self->kept);
    Py_VISIT(self->observe);
    Py_VISIT(self->exit_line);
    Py_VISIT(self->empty_reply);
    Py_VISIT(self->owner);
    Py_VISIT(self->on_read);
    Py_VISIT(self->partial);
    Py_VISIT(self->take);
    Py_VISIT(self->grant);
    Py_VISIT(self->host);
    return 0;
}

static int
LineReader_clear(LineReader *self)
{
    Py_CLEAR(self->handler);
    Py_CLEAR(self->peer);
    Py_CLEAR(self->counters);
    Py_CLEAR(self->write);
    Py_CLEAR(self->buffered);
    Py_CLEAR(self->kept);
    Py_CLEAR(self->observe);
    Py_CLEAR(self->exit_line);
    Py_CLEAR(self->empty_reply);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->on_read);
    Py_CLEAR(self->partial);
    Py_CLEAR(self->take);
    Py_CLEAR(self->grant);
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
    {"feed", (PyCFunction)(void (*)(void))LineReader_feed, METH_FASTCALL,
     "feed(partial, data) -> (status, taken, rest, extra)\n\n"
     "Split partial + data into lines (\\n or \\r\\n; with length_prefix 2, len16\n"
     "messages), call handler(line, peer) for each, write the replies (each\n"
     "followed by \\n, or after its len16 prefix; an empty line answered with\n"
     "empty_reply) with one write(), and add received, replied, no_reply and\n"
     "dropped_empty to counters.  status LINES_DONE: every complete line was\n"
     "handled, rest is the unfinished line left.  Otherwise it stopped at a line\n"
     "for Python, and rest is the bytes after it (for LINES_LIMITED, from it on):\n"
     "LINES_EXIT the exit line, LINES_OVERSIZE a line over max_line (rest empty),\n"
     "LINES_RESULT a result neither bytes nor None (extra), LINES_ERROR the handler\n"
     "(or take) raised (extra, the exception), LINES_LIMITED take granted no token,\n"
     "LINES_EMPTY an empty message and no empty_reply (rest from it on).\n"
     "taken: the requests taken, the stopping line included for RESULT and ERROR.\n"
     "The replies before the stopping line are written; then, with buffered and\n"
     "kept, kept(held, wire, None) if buffered() says the transport holds bytes."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef LineReader_members[] = {
    {"polled", T_INT, offsetof(LineReader, polled), READONLY,
     "Whether a LinePoller reads this connection now."},
    {"unsent_lead", T_PYSSIZET, offsetof(LineReader, unsent_lead), READONLY,
     "Of the unsent replies a LinePoller last handed back, the bytes that end a\n"
     "message begun in an earlier send (len16: where its first whole message starts)."},
    {NULL, 0, 0, 0, NULL},
};

PyTypeObject LineReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "udpkit._fastpath.LineReader",
    .tp_doc = "LineReader(handler, peer, counters, write, observe=None, take=None, *, "
              "max_line, exit_line, empty_reply, grant, buffered=None, kept=None, "
              "length_prefix=0): one TCP connection's line (or len16 message) splitting "
              "and sync handler calls in C.  exit_line None: no exit; empty_reply None: "
              "an empty message stops the call (LINES_EMPTY).  take: "
              "admission.take for a source under a rate limit (tokens asked for in grants "
              "of `grant`).  buffered, kept: transport.get_write_buffer_size and the "
              "connection's WriteLedger.wrote, told of a write the transport holds.",
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
    if (PyType_Ready(&LineReaderType) < 0) return -1;
    if (PyModule_AddIntConstant(module, "LINES_EMPTY", LINES_EMPTY) < 0) return -1;
    return PyModule_AddObjectRef(module, "LineReader", (PyObject *)&LineReaderType);
}
