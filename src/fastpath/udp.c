/* FastPath: the UDP server's receive/handle/send loop (see module.c). */

#include "fastpath.h"

#include <stdlib.h>

#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif

#define VLEN 64           /* datagrams per recvmmsg/sendmmsg */
#define CACHE_SLOTS 256   /* remembered senders (direct-mapped) */
#define CONTROL_SPACE CMSG_SPACE(sizeof(uint32_t))

enum { SERVE_ALWAYS = 0, CHECK_EACH = 1, DENY_ALWAYS = 2 };

typedef struct {
    socklen_t namelen;                /* 0: empty slot */
    struct sockaddr_in6 name;         /* large enough for sockaddr_in too */
    PyObject *peer;                   /* udpkit.core.handler.Peer */
    int verdict;
    long credit;                      /* rate-limit tokens granted, not yet spent */
} PeerSlot;

typedef struct {
    PyObject_HEAD
    int fd;
    int max_per_read;                 /* datagrams per read() call, as the Python path */
    Py_ssize_t max_request;
    Py_ssize_t bufsize;
    double max_amplification;         /* <= 0: off */
    int ancillary;
    uint32_t kernel_drops_seen;
    PyObject *handler;
    PyObject *endpoint;
    PyObject *counters;
    PyObject *admission_check;        /* admission.check or NULL */
    PyObject *constant_verdict;       /* admission.constant_verdict or NULL */
    PyObject *admission_take;         /* admission.take or NULL */
    PyObject *grant;                  /* tokens asked for at once (a Python int) */
    PyObject *latency_observe;        /* latency.observe or NULL */
    PyObject *peer_type;
    /* Words Python owns (udpkit.core.admission, the Peer's transport), given to init. */
    PyObject *transport, *serve, *denied, *rate_limited, *amplification;
    long long delta[C_COUNT];
    char *buffers;                    /* VLEN * bufsize */
    struct mmsghdr rmsgs[VLEN];
    struct iovec riov[VLEN];
    struct sockaddr_in6 rnames[VLEN];
    char control[VLEN][CONTROL_SPACE];
    struct mmsghdr smsgs[VLEN];
    struct iovec siov[VLEN];
    PyObject *sreply[VLEN];           /* owned */
    PyObject *speer[VLEN];            /* owned */
    int nsend;
    PeerSlot cache[CACHE_SLOTS];
} FastPath;

static PyObject *
endpoint_call(FastPath *self, PyObject *name, PyObject *a, PyObject *b, PyObject *c, PyObject *d,
              size_t nargs)
{
    PyObject *args[5] = {self->endpoint, a, b, c, d};
    return PyObject_VectorcallMethod(name, args, nargs + 1, NULL);
}

static void
endpoint_call_quietly(FastPath *self, PyObject *name, PyObject *a, PyObject *b, PyObject *c,
                      size_t nargs)
{
    PyObject *result = endpoint_call(self, name, a, b, c, NULL, nargs);
    if (result == NULL) {
        PyErr_WriteUnraisable(self->endpoint);
    } else {
        Py_DECREF(result);
    }
}

/* -- senders --------------------------------------------------------------- */

static uint32_t
hash_name(const unsigned char *p, socklen_t len)
{
    uint32_t h = 2166136261u;
    for (socklen_t i = 0; i < len; i++) h = (h ^ p[i]) * 16777619u;
    return h ^ (h >> 15);
}

static PyObject *
make_address(const struct sockaddr_in6 *name)
{
    char text[INET6_ADDRSTRLEN];
    if (name->sin6_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)name;
        if (inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text)) == NULL) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return Py_BuildValue("(si)", text, (int)ntohs(a->sin_port));
    }
    if (name->sin6_family == AF_INET6) {
        if (inet_ntop(AF_INET6, &name->sin6_addr, text, sizeof(text)) == NULL) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        return Py_BuildValue("(siII)", text, (int)ntohs(name->sin6_port),
                             (unsigned int)ntohl(name->sin6_flowinfo),
                             (unsigned int)name->sin6_scope_id);
    }
    PyErr_SetString(PyExc_OSError, "unexpected address family");
    return NULL;
}

/* The cached Peer for a sender (borrowed), building it on a miss. */
static PeerSlot *
lookup_peer(FastPath *self, const struct sockaddr_in6 *name, socklen_t namelen)
{
    if (namelen > sizeof(struct sockaddr_in6)) namelen = sizeof(struct sockaddr_in6);
    PeerSlot *slot = &self->cache[hash_name((const unsigned char *)name, namelen) % CACHE_SLOTS];
    if (slot->peer != NULL && slot->namelen == namelen &&
        memcmp(&slot->name, name, namelen) == 0) {
        return slot;
    }

    PyObject *address = make_address(name);
    if (address == NULL) return NULL;
    PyObject *args[2] = {address, self->transport};
    PyObject *peer = PyObject_Vectorcall(self->peer_type, args, 2, NULL);
    Py_DECREF(address);
    if (peer == NULL) return NULL;
    int verdict = SERVE_ALWAYS;
    if (self->admission_check != NULL) {
        verdict = CHECK_EACH;
        if (self->constant_verdict != NULL) {
            PyObject *host = PyTuple_GET_ITEM(PyTuple_GET_ITEM(peer, 0), 0);
            PyObject *fixed = PyObject_CallOneArg(self->constant_verdict, host);
            if (fixed == NULL) {
                Py_DECREF(peer);
                return NULL;
            }
            if (fixed != Py_None) {
                int serve = PyObject_RichCompareBool(fixed, self->serve, Py_EQ);
                int deny = PyObject_RichCompareBool(fixed, self->denied, Py_EQ);
                if (serve > 0) verdict = SERVE_ALWAYS;
                else if (deny > 0) verdict = DENY_ALWAYS;
                PyErr_Clear();
            }
            Py_DECREF(fixed);
        }
    }
    Py_CLEAR(slot->peer);
    slot->peer = peer;
    slot->namelen = namelen;
    memset(&slot->name, 0, sizeof(slot->name));
    memcpy(&slot->name, name, namelen);
    slot->verdict = verdict;
    slot->credit = 0;
    return slot;
}

/* -- send ------------------------------------------------------------------ */

static void
queue_reply(FastPath *self, PyObject *reply, PyObject *peer, const struct sockaddr_in6 *name,
            socklen_t namelen)
{
    int i = self->nsend++;
    self->sreply[i] = reply;  /* reference stolen */
    Py_INCREF(peer);
    self->speer[i] = peer;
    self->siov[i].iov_base = PyBytes_AS_STRING(reply);
    self->siov[i].iov_len = (size_t)PyBytes_GET_SIZE(reply);
    struct msghdr *h = &self->smsgs[i].msg_hdr;
    h->msg_name = (void *)name;  /* the receive slot's address, untouched until the next recv */
    h->msg_namelen = namelen;
    h->msg_iov = &self->siov[i];
    h->msg_iovlen = 1;
    h->msg_control = NULL;
    h->msg_controllen = 0;
    h->msg_flags = 0;
}

/* Send the batched replies; what the socket cannot take now goes to Python's queue. */
static void
flush_sends(FastPath *self, double arrived)
{
    int n = self->nsend, i = 0;
    while (i < n) {
        int sent = sendmmsg(self->fd, &self->smsgs[i], (unsigned int)(n - i), MSG_DONTWAIT);
        if (sent > 0) {
            self->delta[C_REPLIED] += sent;
            observe_replies(self->latency_observe, sent, arrived);
            i += sent;
            continue;
        }
        if (sent < 0 && errno == EINTR) continue;
        if (sent == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
            for (; i < n; i++) {
                PyObject *address = PyTuple_GET_ITEM(self->speer[i], 0);
                endpoint_call_quietly(self, names.enqueue, self->sreply[i], address, NULL, 2);
            }
            break;
        }
        /* This one reply failed (e.g. EMSGSIZE): count it, go on with the rest. */
        int err = errno;
        self->delta[C_SEND_ERRORS] += 1;
        PyObject *code = PyLong_FromLong(err);
        if (code != NULL) {
            endpoint_call_quietly(self, names.send_failed, PyTuple_GET_ITEM(self->speer[i], 0),
                                  code, NULL, 2);
            Py_DECREF(code);
        } else {
            PyErr_WriteUnraisable(self->endpoint);
        }
        i++;
    }
    for (int k = 0; k < n; k++) {
        Py_CLEAR(self->sreply[k]);
        Py_CLEAR(self->speer[k]);
    }
    self->nsend = 0;
}

/* -- receive --------------------------------------------------------------- */

static void
count_kernel_drops(FastPath *self, struct msghdr *h)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL &&
            c->cmsg_len >= CMSG_LEN(sizeof(uint32_t))) {
            uint32_t total;
            memcpy(&total, CMSG_DATA(c), sizeof(total));
            self->delta[C_KERNEL_DROPS] += (uint32_t)(total - self->kernel_drops_seen);
            self->kernel_drops_seen = total;
        }
    }
}

/* Handle one datagram that passed the size checks.  Every outcome, a handler's
 * exception included, is counted: nothing here stops the batch. */
static void
handle_datagram(FastPath *self, PeerSlot *slot, const char *data, Py_ssize_t size,
                PyObject *now_obj, int index)
{
    PyObject *peer = slot->peer;
    Py_INCREF(peer);  /* the slot may be replaced while Python code runs */
    int verdict = slot->verdict;
    if (verdict != SERVE_ALWAYS) {
        PyObject *reason = NULL;
        if (verdict == DENY_ALWAYS) {
            reason = Py_NewRef(self->denied);
        } else if (slot->credit > 0) {  /* a token from this sender's last grant */
            slot->credit -= 1;
            reason = Py_NewRef(Py_None);
        } else if (self->admission_take != NULL) {
            /* Ask the bucket for a grant of several tokens: one call into Python
             * per grant, not per datagram.  0 granted: rate limited. */
            long count = take_grant(self->admission_take,
                                    PyTuple_GET_ITEM(PyTuple_GET_ITEM(peer, 0), 0), now_obj,
                                    self->grant);
            if (count < 0) goto python_error;
            if (count > 0) {
                slot->credit = count - 1;
                reason = Py_NewRef(Py_None);
            } else {
                reason = Py_NewRef(self->rate_limited);
            }
        } else {
            PyObject *args[2] = {PyTuple_GET_ITEM(PyTuple_GET_ITEM(peer, 0), 0), now_obj};
            reason = PyObject_Vectorcall(self->admission_check, args, 2, NULL);
            if (reason == NULL) goto python_error;
        }
        if (reason != Py_None) {
            int denied = PyObject_RichCompareBool(reason, self->denied, Py_EQ);
            self->delta[denied > 0 ? C_DENIED : C_RATE_LIMITED] += 1;
            PyErr_Clear();
            endpoint_call_quietly(self, names.log_abuse, reason, peer, now_obj, 3);
            Py_DECREF(reason);
            Py_DECREF(peer);
            return;
        }
        Py_DECREF(reason);
    }

    PyObject *request = PyBytes_FromStringAndSize(data, size);
    if (request == NULL) goto python_error;
    PyObject *args[2] = {request, peer};
    PyObject *result = PyObject_Vectorcall(self->handler, args, 2, NULL);
    if (result == NULL) {
        Py_DECREF(request);
        goto python_error;
    }
    if (PyBytes_CheckExact(result)) {
        if (self->max_amplification > 0 &&
            (double)PyBytes_GET_SIZE(result) > self->max_amplification * (double)size) {
            self->delta[C_AMPLIFICATION] += 1;
            endpoint_call_quietly(self, names.log_abuse, self->amplification, peer, now_obj, 3);
            Py_DECREF(result);
        } else {
            queue_reply(self, result, peer, &self->rnames[index],
                        self->rmsgs[index].msg_hdr.msg_namelen);
        }
    } else if (result == Py_None) {
        self->delta[C_NO_REPLY] += 1;
        Py_DECREF(result);
    } else {
        /* An awaitable, a bytes-like object or a wrong type: the Python path decides. */
        PyObject *r = endpoint_call(self, names.handle_result, result, request, peer, now_obj, 4);
        Py_DECREF(result);
        if (r == NULL) {
            Py_DECREF(request);
            goto python_error;
        }
        Py_DECREF(r);
    }
    Py_DECREF(request);
    Py_DECREF(peer);
    return;

python_error:
    /* Any exception, SystemExit and KeyboardInterrupt included, is the handler's failure
     * (udpkit.server.dispatch): counted by endpoint.handler_failed, never the loop's. */
    {
        PyObject *exception = take_exception();
        endpoint_call_quietly(self, names.handler_failed, peer, exception, NULL, 2);
        Py_DECREF(exception);
    }
    Py_DECREF(peer);
    return;
}

static void
prepare_receive(FastPath *self, int want)
{
    for (int i = 0; i < want; i++) {
        struct msghdr *h = &self->rmsgs[i].msg_hdr;
        h->msg_namelen = sizeof(struct sockaddr_in6);
        h->msg_controllen = self->ancillary ? CONTROL_SPACE : 0;
        h->msg_flags = 0;
    }
}

/* Handle the datagrams of rmsgs[0:got], then send their replies. */
static void
handle_batch(FastPath *self, int got, double now, PyObject *now_obj)
{
    for (int i = 0; i < got; i++) {
        struct msghdr *h = &self->rmsgs[i].msg_hdr;
        Py_ssize_t size = (Py_ssize_t)self->rmsgs[i].msg_len;
        self->delta[C_RECEIVED] += 1;
        if (self->ancillary && h->msg_controllen > 0) count_kernel_drops(self, h);
        if (h->msg_flags & MSG_TRUNC) {
            self->delta[C_TRUNCATED] += 1;
            continue;
        }
        if (size == 0) {
            self->delta[C_EMPTY] += 1;
            continue;
        }
        if (size > self->max_request) {
            self->delta[C_OVERSIZE] += 1;
            continue;
        }
        PeerSlot *slot = lookup_peer(self, &self->rnames[i], h->msg_namelen);
        if (slot == NULL) {
            /* Cannot happen for an IP socket; keep the counts exact anyway. */
            PyErr_Clear();
            self->delta[C_SEND_ERRORS] += 1;
            continue;
        }
        handle_datagram(self, slot, (const char *)h->msg_iov->iov_base, size, now_obj, i);
    }
    if (self->nsend) flush_sends(self, now);
}

/* Read and handle up to max_per_read datagrams.  ``have_first``: the first recvmmsg was
 * made while spinning (asked for ``first_want``, returned ``first``, errno ``first_errno``). */
static PyObject *
serve_socket(FastPath *self, double now, int have_first, int first, int first_want,
             int first_errno)
{
    PyObject *now_obj = PyFloat_FromDouble(now);
    if (now_obj == NULL) return NULL;
    int total = 0;

    while (total < self->max_per_read) {
        int want = self->max_per_read - total < VLEN ? self->max_per_read - total : VLEN;
        int got;
        if (have_first) {
            got = first;
            want = first_want;
            errno = first_errno;
            have_first = 0;
        } else {
            prepare_receive(self, want);
            got = recvmmsg(self->fd, self->rmsgs, (unsigned int)want, MSG_DONTWAIT, NULL);
        }
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
            /* e.g. an error queued on the socket: report, keep serving (counts as one). */
            PyObject *code = PyLong_FromLong(errno);
            if (code != NULL) {
                endpoint_call_quietly(self, names.receive_failed, code, NULL, NULL, 1);
                Py_DECREF(code);
            }
            total += 1;
            continue;
        }
        handle_batch(self, got, now, now_obj);
        total += got;
        if (got < want) break;  /* the queue is (nearly) empty: back to the loop */
    }
    Py_DECREF(now_obj);
    if (flush_counters(self->counters, self->delta) < 0) return NULL;
    return PyLong_FromLong(total);
}

static PyObject *
FastPath_read(FastPath *self, PyObject *Py_UNUSED(ignored))
{
    return serve_socket(self, monotonic_now(), 0, 0, 0, 0);
}

/* Poll the socket without blocking, and without the GIL, until a datagram (or an
 * error) comes or ``seconds`` have passed; then handle what came as read() does.
 * The caller (udpkit.core.busy_poll) bounds ``seconds`` so the loop keeps its turn. */
static PyObject *
FastPath_spin(FastPath *self, PyObject *arg)
{
    double seconds = PyFloat_AsDouble(arg);
    if (seconds == -1.0 && PyErr_Occurred()) return NULL;
    int want = self->max_per_read < VLEN ? self->max_per_read : VLEN;
    int got, err = 0;
    prepare_receive(self, want);  /* an EAGAIN leaves the headers as they are */
    double now;
    Py_BEGIN_ALLOW_THREADS
    double until = monotonic_now() + seconds;
    for (;;) {
        got = recvmmsg(self->fd, self->rmsgs, (unsigned int)want, MSG_DONTWAIT, NULL);
        now = monotonic_now();  /* the arrival time of what came, as read() takes it */
        if (got >= 0) break;
        err = errno;
        if (err != EAGAIN && err != EWOULDBLOCK && err != EINTR) break;
        if (now >= until) break;
    }
    Py_END_ALLOW_THREADS
    if (got < 0 && (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)) {
        return PyLong_FromLong(0);
    }
    return serve_socket(self, now, 1, got, want, err);
}

/* -- type ------------------------------------------------------------------ */

static int
FastPath_init(FastPath *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fd", "handler", "endpoint", "counters", "peer_type",
                               "max_request", "recv_buffer", "ancillary", "admission_check",
                               "constant_verdict", "max_amplification", "latency_observe",
                               "admission_take", "max_per_read", "grant", "transport",
                               "serve", "denied", "rate_limited", "amplification", NULL};
    int fd, ancillary, max_per_read;
    Py_ssize_t max_request, bufsize;
    PyObject *handler, *endpoint, *counters, *peer_type, *check, *constant, *amplification,
        *observe, *take, *grant, *transport, *serve, *denied, *rate_limited, *too_large;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iOOOOnnpOOOOOiO!UUUUU:FastPath", keywords,
                                     &fd, &handler, &endpoint, &counters, &peer_type,
                                     &max_request, &bufsize, &ancillary, &check, &constant,
                                     &amplification, &observe, &take, &max_per_read,
                                     &PyLong_Type, &grant, &transport, &serve, &denied,
                                     &rate_limited, &too_large)) {
        return -1;
    }
    if (bufsize < 1 || bufsize > 65536 || max_request < 1 || max_per_read < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "recv_buffer must be 1..65536, max_request and max_per_read >= 1");
        return -1;
    }
    if (self->buffers != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FastPath is already initialised");
        return -1;
    }
    double limit = 0.0;
    if (amplification != Py_None) {
        limit = PyFloat_AsDouble(amplification);
        if (limit == -1.0 && PyErr_Occurred()) return -1;
    }
    self->buffers = PyMem_Malloc((size_t)bufsize * VLEN);
    if (self->buffers == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->fd = fd;
    self->max_per_read = max_per_read;
    self->max_request = max_request;
    self->bufsize = bufsize;
    self->ancillary = ancillary;
    self->max_amplification = limit;
    self->handler = Py_NewRef(handler);
    self->endpoint = Py_NewRef(endpoint);
    self->counters = Py_NewRef(counters);
    self->peer_type = Py_NewRef(peer_type);
    self->admission_check = check == Py_None ? NULL : Py_NewRef(check);
    self->constant_verdict = constant == Py_None ? NULL : Py_NewRef(constant);
    self->latency_observe = observe == Py_None ? NULL : Py_NewRef(observe);
    self->admission_take = take == Py_None ? NULL : Py_NewRef(take);
    self->grant = Py_NewRef(grant);
    self->transport = Py_NewRef(transport);
    self->serve = Py_NewRef(serve);
    self->denied = Py_NewRef(denied);
    self->rate_limited = Py_NewRef(rate_limited);
    self->amplification = Py_NewRef(too_large);
    for (int i = 0; i < VLEN; i++) {
        self->riov[i].iov_base = self->buffers + (size_t)i * (size_t)bufsize;
        self->riov[i].iov_len = (size_t)bufsize;
        struct msghdr *h = &self->rmsgs[i].msg_hdr;
        h->msg_name = &self->rnames[i];
        h->msg_namelen = sizeof(struct sockaddr_in6);
        h->msg_iov = &self->riov[i];
        h->msg_iovlen = 1;
        h->msg_control = self->control[i];
        h->msg_controllen = CONTROL_SPACE;
    }
    return 0;
}

static int
FastPath_traverse(FastPath *self, visitproc visit, void *arg)
{
    Py_VISIT(self->handler);
    Py_VISIT(self->endpoint);
    Py_VISIT(self->counters);
    Py_VISIT(self->peer_type);
    Py_VISIT(self->admission_check);
    Py_VISIT(self->constant_verdict);
    Py_VISIT(self->admission_take);
    Py_VISIT(self->latency_observe);
    Py_VISIT(self->transport);
    Py_VISIT(self->serve);
    Py_VISIT(self->denied);
    Py_VISIT(self->rate_limited);
    Py_VISIT(self->amplification);
    for (int i = 0; i < CACHE_SLOTS; i++) Py_VISIT(self->cache[i].peer);
    return 0;
}

static int
FastPath_clear(FastPath *self)
{
    Py_CLEAR(self->handler);
    Py_CLEAR(self->endpoint);
    Py_CLEAR(self->counters);
    Py_CLEAR(self->peer_type);
    Py_CLEAR(self->admission_check);
    Py_CLEAR(self->transport);
    Py_CLEAR(self->serve);
    Py_CLEAR(self->denied);
    Py_CLEAR(self->rate_limited);
    Py_CLEAR(self->amplification);
    Py_CLEAR(self->constant_verdict);
    Py_CLEAR(self->admission_take);
    Py_CLEAR(self->grant);
    Py_CLEAR(self->latency_observe);
    for (int i = 0; i < CACHE_SLOTS; i++) {
        Py_CLEAR(self->cache[i].peer);
        self->cache[i].namelen = 0;
    }
    for (int i = 0; i < self->nsend; i++) {
        Py_CLEAR(self->sreply[i]);
        Py_CLEAR(self->speer[i]);
    }
    self->nsend = 0;
    return 0;
}

static void
FastPath_dealloc(FastPath *self)
{
    PyObject_GC_UnTrack(self);
    FastPath_clear(self);
    PyMem_Free(self->buffers);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef FastPath_methods[] = {
    {"read", (PyCFunction)FastPath_read, METH_NOARGS,
     "read() -> int\n\nHandle up to max_per_read datagrams now waiting on the socket; "
     "return how many were read (max_per_read means there may be more)."},
    {"spin", (PyCFunction)FastPath_spin, METH_O,
     "spin(seconds) -> int\n\nPoll the socket without blocking (the GIL released) until "
     "a datagram comes or seconds have passed, then handle up to max_per_read as read() "
     "does; return how many were read (0: none came)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef FastPath_members[] = {
    {"kernel_drops_seen", T_UINT, offsetof(FastPath, kernel_drops_seen), 0,
     "The socket's kernel drop count (sk_drops) already added to counters.kernel_drops:\n"
     "from SO_RXQ_OVFL as datagrams arrive; the endpoint sets it when it reads the\n"
     "count directly (tail drops, see udpkit.server.kernel_drops)."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject FastPathType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "udpkit._fastpath.FastPath",
    .tp_doc = "recvmmsg -> checks -> handler -> sendmmsg on one non-blocking UDP socket.",
    .tp_basicsize = sizeof(FastPath),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FastPath_init,
    .tp_dealloc = (destructor)FastPath_dealloc,
    .tp_traverse = (traverseproc)FastPath_traverse,
    .tp_clear = (inquiry)FastPath_clear,
    .tp_methods = FastPath_methods,
    .tp_members = FastPath_members,
};

int
fastpath_add_udp(PyObject *module)
{
    if (PyType_Ready(&FastPathType) < 0) return -1;
    return PyModule_AddObjectRef(module, "FastPath", (PyObject *)&FastPathType);
}
