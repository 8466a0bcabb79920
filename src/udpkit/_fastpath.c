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
 *
 * LinePoller reads those connections too: one epoll set for all, one event
 * loop callback per wake-up, recv/split/send per ready connection, and the
 * connection handed back to Python at the first thing that is not plain.
 */

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
    /* While a LinePoller reads the connection (see below). */
    int polled;
    int fd;
    PyObject *owner;        /* the TcpConnection, told when the poller hands it back */
    double last_request;    /* monotonic time of the last complete line, or -1 */
    double line_started;    /* when the unfinished line began, or -1 */
} LineReader;

/* What the lines of one received chunk added to the counters. */
typedef struct {
    long long received, replied, no_reply, empty;
} LineCounts;

static int
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

#define LINES_FAILED (-100) /* a Python error is set */

/* The lines of buf[0:size] (framing.partial followed by the bytes just
 * received): call the handler per line, put the framed replies in *out,
 * add to *counts, and leave framing.partial as feed() documents.  Returns
 * what feed() returns, or LINES_FAILED.  ``source``: the bytes object buf
 * points into, reused for the unfinished rest when nothing was taken (may be
 * NULL).  buf must not change while handlers run. */
static long
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
static void
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

static void
replies_init(Replies *out)
{
    out->data = out->stack;
    out->len = 0;
    out->cap = (Py_ssize_t)sizeof(out->stack);
    out->heap = 0;
}

static void
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

static PyMemberDef LineReader_members[] = {
    {"polled", T_INT, offsetof(LineReader, polled), READONLY,
     "Whether a LinePoller reads this connection now."},
    {"last_request", T_DOUBLE, offsetof(LineReader, last_request), READONLY,
     "While polled: monotonic time of the last complete line (-1: none yet)."},
    {"line_started", T_DOUBLE, offsetof(LineReader, line_started), READONLY,
     "While polled: when the unfinished line began (-1: none)."},
    {NULL, 0, 0, 0, NULL},
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
    .tp_members = LineReader_members,
};

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
#define RECV_SIZE 65536

static PyObject *str_from_poller;

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

static PyObject *
LinePoller_poll(LinePoller *self, PyObject *Py_UNUSED(ignored))
{
    if (self->busy || self->epfd < 0) Py_RETURN_NONE;
    int count = epoll_wait(self->epfd, self->events, POLL_EVENTS, 0);
    if (count < 0 && errno != EINTR) return PyErr_SetFromErrno(PyExc_OSError);
    if (count <= 0) Py_RETURN_NONE;
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
     "poll()\n\nServe every ready connection once (the event loop's reader callback)."},
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
    INTERN(str_from_poller, "_from_poller");
#undef INTERN
    if (PyType_Ready(&FastPathType) < 0) return NULL;
    if (PyType_Ready(&LineReaderType) < 0) return NULL;
    if (PyType_Ready(&LinePollerType) < 0) return NULL;
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
    if (PyModule_AddObjectRef(module, "LinePoller", (PyObject *)&LinePollerType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "BATCH", MAX_PER_READ) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
