/* udpkit._fastpath: the UDP server's receive/handle/send loop in C (Linux).
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
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if !defined(__linux__)
#error "udpkit._fastpath needs Linux (recvmmsg/sendmmsg)"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif

#define VLEN 64           /* datagrams per recvmmsg/sendmmsg */
#define MAX_PER_READ 256  /* datagrams per read() call, like the Python path */
#define CACHE_SLOTS 256   /* remembered senders (direct-mapped) */
#define CONTROL_SPACE CMSG_SPACE(sizeof(uint32_t))

enum { SERVE_ALWAYS = 0, CHECK_EACH = 1, DENY_ALWAYS = 2 };

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

static const char *counter_names[C_COUNT] = {
    "received",         "replied",          "no_reply",
    "dropped_empty",    "dropped_oversize", "dropped_truncated",
    "dropped_denied",   "dropped_rate_limited", "dropped_amplification",
    "send_errors",      "kernel_drops",
};

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
    PyObject *take_want;              /* the grant asked for at once (a Python int) */
    PyObject *latency_observe;        /* latency.observe or NULL */
    PyObject *peer_type;
    PyObject *udp;                    /* "udp" */
    PyObject *counter_keys[C_COUNT];
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

/* Interned method names of the endpoint (set at module init). */
static PyObject *str_handle_result, *str_handler_failed, *str_log_abuse, *str_enqueue,
    *str_send_failed, *str_receive_failed, *str_denied, *str_rate_limited,
    *str_amplification, *str_serve;

static double
monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Call a Python callback whose failure must not stop the server. */
static void
call_quietly(PyObject *callable, PyObject *const *args, size_t nargs)
{
    PyObject *result = PyObject_Vectorcall(callable, args, nargs, NULL);
    if (result == NULL) {
        PyErr_WriteUnraisable(callable);
    } else {
        Py_DECREF(result);
    }
}

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

/* -- counters ------------------------------------------------------------ */

static int
flush_counters(FastPath *self)
{
    int status = 0;
    for (int i = 0; i < C_COUNT; i++) {
        if (self->delta[i] == 0) continue;
        PyObject *key = self->counter_keys[i];
        PyObject *old = PyObject_GetAttr(self->counters, key);
        if (old == NULL) { status = -1; break; }
        PyObject *add = PyLong_FromLongLong(self->delta[i]);
        PyObject *sum = add ? PyNumber_Add(old, add) : NULL;
        Py_DECREF(old);
        Py_XDECREF(add);
        if (sum == NULL || PyObject_SetAttr(self->counters, key, sum) < 0) {
            Py_XDECREF(sum);
            status = -1;
            break;
        }
        Py_DECREF(sum);
        self->delta[i] = 0;
    }
    return status;
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
    PyObject *args[2] = {address, self->udp};
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
                int serve = PyObject_RichCompareBool(fixed, str_serve, Py_EQ);
                int deny = PyObject_RichCompareBool(fixed, str_denied, Py_EQ);
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

static void
observe_latency(FastPath *self, int count, double arrived)
{
    if (self->latency_observe == NULL || count <= 0) return;
    PyObject *elapsed = PyFloat_FromDouble(monotonic_now() - arrived);
    if (elapsed == NULL) {
        PyErr_WriteUnraisable(self->endpoint);
        return;
    }
    for (int i = 0; i < count; i++) call_quietly(self->latency_observe, &elapsed, 1);
    Py_DECREF(elapsed);
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
            observe_latency(self, sent, arrived);
            i += sent;
            continue;
        }
        if (sent < 0 && errno == EINTR) continue;
        if (sent == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
            for (; i < n; i++) {
                PyObject *address = PyTuple_GET_ITEM(self->speer[i], 0);
                endpoint_call_quietly(self, str_enqueue, self->sreply[i], address, NULL, 2);
            }
            break;
        }
        /* This one reply failed (e.g. EMSGSIZE): count it, go on with the rest. */
        int err = errno;
        self->delta[C_SEND_ERRORS] += 1;
        PyObject *code = PyLong_FromLong(err);
        if (code != NULL) {
            endpoint_call_quietly(self, str_send_failed, PyTuple_GET_ITEM(self->speer[i], 0),
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

/* Handle one datagram that passed the size checks.  Returns -1 only on a
 * BaseException that is not an Exception (KeyboardInterrupt, SystemExit). */
static int
handle_datagram(FastPath *self, PeerSlot *slot, const char *data, Py_ssize_t size,
                PyObject *now_obj, int index)
{
    PyObject *peer = slot->peer;
    Py_INCREF(peer);  /* the slot may be replaced while Python code runs */
    int verdict = slot->verdict;
    if (verdict != SERVE_ALWAYS) {
        PyObject *reason = NULL;
        if (verdict == DENY_ALWAYS) {
            reason = str_denied;
            Py_INCREF(reason);
        } else if (slot->credit > 0) {  /* a token from this sender's last grant */
            slot->credit -= 1;
            reason = Py_NewRef(Py_None);
        } else if (self->admission_take != NULL) {
            /* Ask the bucket for a grant of several tokens: one call into Python
             * per grant, not per datagram.  0 granted: rate limited. */
            PyObject *args[3] = {PyTuple_GET_ITEM(PyTuple_GET_ITEM(peer, 0), 0), now_obj,
                                 self->take_want};
            PyObject *granted = PyObject_Vectorcall(self->admission_take, args, 3, NULL);
            if (granted == NULL) goto python_error;
            long count = PyLong_AsLong(granted);
            Py_DECREF(granted);
            if (count == -1 && PyErr_Occurred()) goto python_error;
            if (count > 0) {
                slot->credit = count - 1;
                reason = Py_NewRef(Py_None);
            } else {
                reason = Py_NewRef(str_rate_limited);
            }
        } else {
            PyObject *args[2] = {PyTuple_GET_ITEM(PyTuple_GET_ITEM(peer, 0), 0), now_obj};
            reason = PyObject_Vectorcall(self->admission_check, args, 2, NULL);
            if (reason == NULL) goto python_error;
        }
        if (reason != Py_None) {
            int denied = PyObject_RichCompareBool(reason, str_denied, Py_EQ);
            self->delta[denied > 0 ? C_DENIED : C_RATE_LIMITED] += 1;
            PyErr_Clear();
            endpoint_call_quietly(self, str_log_abuse, reason, peer, now_obj, 3);
            Py_DECREF(reason);
            Py_DECREF(peer);
            return 0;
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
            endpoint_call_quietly(self, str_log_abuse, str_amplification, peer, now_obj, 3);
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
        PyObject *r = endpoint_call(self, str_handle_result, result, request, peer, now_obj, 4);
        Py_DECREF(result);
        if (r == NULL) {
            Py_DECREF(request);
            goto python_error;
        }
        Py_DECREF(r);
    }
    Py_DECREF(request);
    Py_DECREF(peer);
    return 0;

python_error:
    if (!PyErr_ExceptionMatches(PyExc_Exception)) {
        Py_DECREF(peer);
        return -1;
    }
    {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        PyErr_NormalizeException(&type, &value, &traceback);
        if (traceback != NULL && value != NULL) PyException_SetTraceback(value, traceback);
        if (value != NULL) {
            endpoint_call_quietly(self, str_handler_failed, peer, value, NULL, 2);
        }
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(traceback);
    }
    Py_DECREF(peer);
    return 0;
}

static PyObject *
FastPath_read(FastPath *self, PyObject *Py_UNUSED(ignored))
{
    double now = monotonic_now();
    PyObject *now_obj = PyFloat_FromDouble(now);
    if (now_obj == NULL) return NULL;
    int total = 0, failed = 0;

    while (total < MAX_PER_READ) {
        for (int i = 0; i < VLEN; i++) {
            struct msghdr *h = &self->rmsgs[i].msg_hdr;
            h->msg_namelen = sizeof(struct sockaddr_in6);
            h->msg_controllen = self->ancillary ? CONTROL_SPACE : 0;
            h->msg_flags = 0;
        }
        int want = MAX_PER_READ - total < VLEN ? MAX_PER_READ - total : VLEN;
        int got = recvmmsg(self->fd, self->rmsgs, (unsigned int)want, MSG_DONTWAIT, NULL);
        if (got < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
            /* e.g. an error queued on the socket: report, keep serving (counts as one). */
            PyObject *code = PyLong_FromLong(errno);
            if (code != NULL) {
                endpoint_call_quietly(self, str_receive_failed, code, NULL, NULL, 1);
                Py_DECREF(code);
            }
            total += 1;
            continue;
        }
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
            if (handle_datagram(self, slot, (const char *)h->msg_iov->iov_base, size, now_obj, i) < 0) {
                failed = 1;
                break;
            }
        }
        if (self->nsend) {
            if (failed) {
                PyObject *type, *value, *traceback;
                PyErr_Fetch(&type, &value, &traceback);
                flush_sends(self, now);
                PyErr_Restore(type, value, traceback);
            } else {
                flush_sends(self, now);
            }
        }
        total += got;
        if (failed || got < want) break;  /* the queue is (nearly) empty: back to the loop */
    }
    Py_DECREF(now_obj);
    if (failed) {
        PyObject *type, *value, *traceback;
        PyErr_Fetch(&type, &value, &traceback);
        if (flush_counters(self) < 0) PyErr_Clear();
        PyErr_Restore(type, value, traceback);
        return NULL;
    }
    if (flush_counters(self) < 0) return NULL;
    return PyLong_FromLong(total);
}

/* -- type ------------------------------------------------------------------ */

static int
FastPath_init(FastPath *self, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"fd", "handler", "endpoint", "counters", "peer_type",
                               "max_request", "recv_buffer", "ancillary", "admission_check",
                               "constant_verdict", "max_amplification", "latency_observe",
                               "admission_take", NULL};
    int fd, ancillary;
    Py_ssize_t max_request, bufsize;
    PyObject *handler, *endpoint, *counters, *peer_type, *check, *constant, *amplification,
        *observe, *take = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iOOOOnnpOOOO|O:FastPath", keywords, &fd,
                                     &handler, &endpoint, &counters, &peer_type, &max_request,
                                     &bufsize, &ancillary, &check, &constant, &amplification,
                                     &observe, &take)) {
        return -1;
    }
    if (bufsize < 1 || bufsize > 65536 || max_request < 1) {
        PyErr_SetString(PyExc_ValueError, "recv_buffer must be 1..65536, max_request >= 1");
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
    for (int i = 0; i < C_COUNT; i++) {
        self->counter_keys[i] = PyUnicode_InternFromString(counter_names[i]);
        if (self->counter_keys[i] == NULL) return -1;
    }
    self->udp = PyUnicode_InternFromString("udp");
    if (self->udp == NULL) return -1;
    self->fd = fd;
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
    self->take_want = PyLong_FromLong(16);
    if (self->take_want == NULL) return -1;
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
    Py_CLEAR(self->constant_verdict);
    Py_CLEAR(self->admission_take);
    Py_CLEAR(self->take_want);
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
    for (int i = 0; i < C_COUNT; i++) Py_CLEAR(self->counter_keys[i]);
    Py_CLEAR(self->udp);
    PyMem_Free(self->buffers);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
FastPath_forget_peers(FastPath *self, PyObject *Py_UNUSED(ignored))
{
    for (int i = 0; i < CACHE_SLOTS; i++) {
        Py_CLEAR(self->cache[i].peer);
        self->cache[i].namelen = 0;
    }
    Py_RETURN_NONE;
}

static PyMethodDef FastPath_methods[] = {
    {"read", (PyCFunction)FastPath_read, METH_NOARGS,
     "read() -> int\n\nHandle up to 256 datagrams now waiting on the socket; return how many "
     "were read (256 means there may be more)."},
    {"forget_peers", (PyCFunction)FastPath_forget_peers, METH_NOARGS,
     "Drop the remembered senders (and their admission verdicts)."},
    {NULL, NULL, 0, NULL},
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
};


/* -- TCP: line framing ----------------------------------------------------- */

/* What LineReader.feed() returns when every complete line was handled:
 * LINES_TAKEN if there was at least one, | PARTIAL_LEFT if an unfinished line
 * is left in framing.partial.  A negative value: it stopped at a line that
 * Python must see (-status below); unusual() says the rest. */
#define LINES_TAKEN 2
#define PARTIAL_LEFT 1
enum { LINES_DONE = 0, LINES_EXIT = 1, LINES_OVERSIZE = 2, LINES_RESULT = 3, LINES_ERROR = 4 };

static PyObject *str_received, *str_replied, *str_no_reply, *str_dropped_empty, *str_partial,
    *str_max_line;

static const char ERR_EMPTY_LINE[] = "error: empty request\n";

/* The framed replies of one call: on the stack until they outgrow it. */
typedef struct {
    char *data;
    Py_ssize_t len, cap;
    int heap;
    char stack[4096];
} Replies;

static int
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
} LineReader;

static PyObject *
LineReader_feed(LineReader *self, PyObject *data)
{
    if (!PyBytes_CheckExact(data)) {
        PyErr_SetString(PyExc_TypeError, "data must be bytes");
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

    PyObject *handler = self->handler, *peer = self->peer;
    Py_INCREF(handler);
    Py_INCREF(peer);
    const char *buf = PyBytes_AS_STRING(source);  /* immutable: safe while handlers run */
    double arrived = self->observe != NULL ? monotonic_now() : 0.0;
    Py_ssize_t size = PyBytes_GET_SIZE(source), pos = 0, max_line = self->max_line;
    long long received = 0, replied = 0, no_reply = 0, empty = 0, lines = 0;
    int status = LINES_DONE;
    PyObject *extra = NULL, *rest = NULL, *outcome = NULL;
    Replies out;
    out.data = out.stack;
    out.len = 0;
    out.cap = (Py_ssize_t)sizeof(out.stack);
    out.heap = 0;

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
        lines++;
        received++;
        if (length == 0) {
            empty++;
            pos = end + 1;
            if (replies_put(&out, ERR_EMPTY_LINE, (Py_ssize_t)sizeof(ERR_EMPTY_LINE) - 1) < 0)
                goto fail;
            continue;
        }
        PyObject *request = PyBytes_FromStringAndSize(buf + pos, length);
        if (request == NULL) goto fail;
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
            int failed = replies_put(&out, PyBytes_AS_STRING(result), PyBytes_GET_SIZE(result)) < 0 ||
                         replies_put(&out, "\n", 1) < 0;
            Py_DECREF(result);
            if (failed) goto fail;
            replied++;
        } else if (result == Py_None) {
            Py_DECREF(result);
            no_reply++;
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
    rest = pos == 0 ? Py_NewRef(source) : PyBytes_FromStringAndSize(buf + pos, size - pos);
    if (rest == NULL) goto fail;

    /* Counters first, so they are exact even if the write below raises. */
    if (add_counter(self->counters, str_received, received) < 0 ||
        add_counter(self->counters, str_replied, replied) < 0 ||
        add_counter(self->counters, str_no_reply, no_reply) < 0 ||
        add_counter(self->counters, str_dropped_empty, empty) < 0) {
        goto fail;
    }
    if (status == LINES_DONE) {
        if (PyObject_SetAttr(self->framing, str_partial, rest) < 0) goto fail;
    } else {
        PyObject *nothing = PyBytes_FromStringAndSize(NULL, 0);
        int failed = nothing == NULL || PyObject_SetAttr(self->framing, str_partial, nothing) < 0;
        Py_XDECREF(nothing);
        if (failed) goto fail;
    }
    if (out.len > 0) {
        PyObject *wire = PyBytes_FromStringAndSize(out.data, out.len);
        if (wire == NULL) goto fail;
        PyObject *written = PyObject_CallOneArg(self->write, wire);
        Py_DECREF(wire);
        if (written == NULL) goto fail;
        Py_DECREF(written);
        if (self->observe != NULL && replied > 0) {
            PyObject *elapsed = PyFloat_FromDouble(monotonic_now() - arrived);
            if (elapsed == NULL) goto fail;
            for (long long i = 0; i < replied; i++) call_quietly(self->observe, &elapsed, 1);
            Py_DECREF(elapsed);
        }
    }
    if (status == LINES_DONE) {
        long code = (lines > 0 ? LINES_TAKEN : 0) | (PyBytes_GET_SIZE(rest) > 0 ? PARTIAL_LEFT : 0);
        outcome = PyLong_FromLong(code);
    } else {
        Py_XSETREF(self->rest, rest);
        Py_XSETREF(self->extra, extra);
        rest = extra = NULL;
        self->status = status;
        self->handled = lines;
        outcome = PyLong_FromLong(-status);
    }

fail:
    Py_XDECREF(rest);
    Py_XDECREF(extra);
    Py_DECREF(source);
    Py_DECREF(handler);
    Py_DECREF(peer);
    if (out.heap) PyMem_Free(out.data);
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
    static char *keywords[] = {"handler", "peer", "counters", "framing", "write", "observe", NULL};
    PyObject *handler, *peer, *counters, *framing, *write, *observe = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO|O:LineReader", keywords, &handler,
                                     &peer, &counters, &framing, &write, &observe)) {
        return -1;
    }
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
     "-4 the handler raised.  The replies before that line are written."},
    {"unusual", (PyCFunction)LineReader_unusual, METH_NOARGS,
     "unusual() -> (status, rest, handled, extra)\n\n"
     "Where the last feed() stopped: rest, the bytes after that line (framing.partial\n"
     "is left empty); handled, the requests taken (the stopping line included for 3\n"
     "and 4); extra, the handler's result (3) or exception (4)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LineReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "udpkit._fastpath.LineReader",
    .tp_doc = "LineReader(handler, peer, counters, framing, write, observe=None): one TCP "
              "connection's line framing and sync handler calls in C.",
    .tp_basicsize = sizeof(LineReader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)LineReader_init,
    .tp_dealloc = (destructor)LineReader_dealloc,
    .tp_traverse = (traverseproc)LineReader_traverse,
    .tp_clear = (inquiry)LineReader_clear,
    .tp_methods = LineReader_methods,
};

static struct PyModuleDef fastpath_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "udpkit._fastpath",
    .m_doc = "The UDP server's batched receive/handle/send loop (Linux, recvmmsg/sendmmsg) "
             "and the TCP line splitter.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fastpath(void)
{
#define INTERN(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL
    INTERN(str_handle_result, "_handle_result");
    INTERN(str_handler_failed, "_handler_failed");
    INTERN(str_log_abuse, "_log_abuse");
    INTERN(str_enqueue, "_enqueue");
    INTERN(str_send_failed, "_send_failed");
    INTERN(str_receive_failed, "_receive_failed");
    INTERN(str_denied, "denied");
    INTERN(str_rate_limited, "rate_limited");
    INTERN(str_amplification, "amplification");
    INTERN(str_serve, "serve");
    INTERN(str_received, "received");
    INTERN(str_replied, "replied");
    INTERN(str_no_reply, "no_reply");
    INTERN(str_dropped_empty, "dropped_empty");
    INTERN(str_partial, "partial");
    INTERN(str_max_line, "max_line");
#undef INTERN
    if (PyType_Ready(&FastPathType) < 0) return NULL;
    if (PyType_Ready(&LineReaderType) < 0) return NULL;
    PyObject *module = PyModule_Create(&fastpath_module);
    if (module == NULL) return NULL;
    if (PyModule_AddObjectRef(module, "FastPath", (PyObject *)&FastPathType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "LineReader", (PyObject *)&LineReaderType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "BATCH", MAX_PER_READ) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
