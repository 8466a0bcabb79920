/* Pacer: an open-loop generator's sends, on time to the microsecond, from a C thread
 * that also reads the replies.
 *
 * Python (udpkit.bench.paced) decides everything: the intended times, which of
 * them leave together (udpkit.core.pacing.plan_batches) and when each batch
 * leaves; it hands the plan over in chunks with submit(send_at, sizes,
 * payloads), reads back each batch's actual send time with collect(), and the
 * replies, each with its kernel arrival time, with replies().  The thread never
 * touches a Python object and never holds the GIL; Python only does bookkeeping,
 * in bulk, a few times per feed period, and makes no system call per datagram.
 *
 * Waiting for a deadline: sleep on CLOCK_MONOTONIC until spin_ns before it --
 * in poll() on the socket and, when asked, a timerfd armed at that time (else
 * ppoll's own timeout) so a reply wakes the thread to read it -- with the
 * thread's timer slack set to timer_slack_ns (prctl PR_SET_TIMERSLACK: the
 * default 50 us slack would let the kernel wake the thread that late), then
 * spin on clock_gettime to the deadline.  Replies are read with recvmmsg
 * (MSG_DONTWAIT) whenever the socket is readable and after every send; each
 * keeps the kernel's SO_TIMESTAMPNS arrival time (CLOCK_REALTIME, turned into
 * CLOCK_MONOTONIC at the read) and the time it was read.  A batch of one goes out with send(),
 * more with one sendmmsg().  A send the socket refuses for want of buffer space
 * is retried at once (it is late, and its lag says so); any other error is
 * counted and the batch is given up (its requests will time out).
 *
 * The actual time recorded is the clock read just before the system call. */

#include "fastpath.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <unistd.h>

#define SLEEP_SLICE_NS 10000000LL /* re-check for close() at least this often */
#define READ_BATCH 32
#define READ_SIZE 65536

typedef struct Chunk {
    struct Chunk *next;
    Py_ssize_t batches;
    Py_ssize_t payloads;
    int64_t *send_at;     /* per batch, CLOCK_MONOTONIC ns */
    int32_t *sizes;       /* per batch */
    Py_ssize_t *offsets;  /* per payload, into data */
    Py_ssize_t *lengths;  /* per payload */
    char *data;
} Chunk;

typedef struct {
    PyObject_HEAD
    int fd;
    int timerfd;          /* -1: clock_nanosleep */
    long long spin_ns;
    long long timer_slack_ns;
    int max_batch;
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    int wakefd;           /* eventfd: submit() and close() wake an idle thread */
    Chunk *head, *tail;   /* under lock */
    int closing;          /* under lock */
    int64_t *done;        /* actual send times not collected yet, under lock */
    Py_ssize_t done_len, done_cap;
    long long queued;     /* batches submitted and not yet sent, under lock */
    long long send_errors, refused;  /* under lock */
    int last_errno;
    /* replies read and not collected yet, under lock */
    char *rdata;
    Py_ssize_t rdata_len, rdata_cap;
    int32_t *rlen;
    int64_t *rarrived, *rread;
    Py_ssize_t rcount, rcap;
    long long truncated;
    /* the thread's own read buffers */
    char *rbuf;
} Pacer;

static inline int64_t
now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

static void
wake(Pacer *self)
{
    uint64_t one = 1;
    ssize_t ignored = write(self->wakefd, &one, sizeof one);
    (void)ignored;
}

static void
chunk_free(Chunk *chunk)
{
    if (chunk == NULL) return;
    free(chunk->send_at);
    free(chunk->sizes);
    free(chunk->offsets);
    free(chunk->lengths);
    free(chunk->data);
    free(chunk);
}

static int
closing(Pacer *self)
{
    pthread_mutex_lock(&self->lock);
    int value = self->closing;
    pthread_mutex_unlock(&self->lock);
    return value;
}

/* Read every waiting reply into the uncollected list. */
static void
drain(Pacer *self)
{
    struct mmsghdr msgs[READ_BATCH];
    struct iovec iov[READ_BATCH];
    char control[READ_BATCH][CMSG_SPACE(sizeof(struct timespec))];
    for (;;) {
        for (int i = 0; i < READ_BATCH; i++) {
            iov[i].iov_base = self->rbuf + (size_t)i * READ_SIZE;
            iov[i].iov_len = READ_SIZE;
            memset(&msgs[i], 0, sizeof msgs[i]);
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_control = control[i];
            msgs[i].msg_hdr.msg_controllen = sizeof control[i];
        }
        int n = recvmmsg(self->fd, msgs, READ_BATCH, MSG_DONTWAIT, NULL);
        if (n <= 0) {
            if (n < 0 && errno == ECONNREFUSED) {
                pthread_mutex_lock(&self->lock);
                self->refused++;
                pthread_mutex_unlock(&self->lock);
                continue;  /* the error is reported once; read on */
            }
            return;
        }
        int64_t read_at = now_ns();
        int64_t offset = clock_ns(CLOCK_REALTIME) - now_ns();  /* REALTIME - MONOTONIC, now */
        pthread_mutex_lock(&self->lock);
        for (int i = 0; i < n; i++) {
            size_t size = msgs[i].msg_len;
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                self->truncated++;
                continue;
            }
            int64_t arrived = read_at;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c != NULL;
                 c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
                    struct timespec ts;
                    memcpy(&ts, CMSG_DATA(c), sizeof ts);
                    int64_t kernel = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec - offset;
                    if (kernel < arrived) arrived = kernel;
                }
            }
            if (self->rcount == self->rcap) {
                Py_ssize_t cap = self->rcap ? self->rcap * 2 : 4096;
                int32_t *lens = realloc(self->rlen, (size_t)cap * sizeof *lens);
                if (lens != NULL) self->rlen = lens;
                int64_t *arr = realloc(self->rarrived, (size_t)cap * sizeof *arr);
                if (arr != NULL) self->rarrived = arr;
                int64_t *rd = realloc(self->rread, (size_t)cap * sizeof *rd);
                if (rd != NULL) self->rread = rd;
                if (lens == NULL || arr == NULL || rd == NULL) continue;  /* dropped: times out */
                self->rcap = cap;
            }
            if (self->rdata_len + (Py_ssize_t)size > self->rdata_cap) {
                Py_ssize_t cap = self->rdata_cap ? self->rdata_cap : 65536;
                while (cap < self->rdata_len + (Py_ssize_t)size) cap *= 2;
                char *grown = realloc(self->rdata, (size_t)cap);
                if (grown == NULL) continue;
                self->rdata = grown;
                self->rdata_cap = cap;
            }
            memcpy(self->rdata + self->rdata_len, iov[i].iov_base, size);
            self->rdata_len += (Py_ssize_t)size;
            self->rlen[self->rcount] = (int32_t)size;
            self->rarrived[self->rcount] = arrived;
            self->rread[self->rcount] = read_at;
            self->rcount++;
        }
        pthread_mutex_unlock(&self->lock);
        if (n < READ_BATCH) return;
    }
}

/* Wait until `until` (ns), reading replies as they come, in slices, unless
 * closing; 0, or -1 when closing. */
static int
sleep_until(Pacer *self, int64_t until)
{
    for (;;) {
        int64_t now = now_ns();
        if (now >= until) return 0;
        int64_t target = until - now > SLEEP_SLICE_NS ? now + SLEEP_SLICE_NS : until;
        struct pollfd fds[2] = {{self->fd, POLLIN, 0}, {self->timerfd, POLLIN, 0}};
        if (self->timerfd >= 0) {
            struct itimerspec spec = {{0, 0}, {target / 1000000000LL, target % 1000000000LL}};
            timerfd_settime(self->timerfd, TFD_TIMER_ABSTIME, &spec, NULL);
            poll(fds, 2, -1);
            if (fds[1].revents & POLLIN) {
                uint64_t expirations;
                ssize_t ignored = read(self->timerfd, &expirations, sizeof expirations);
                (void)ignored;
            }
        } else {
            int64_t wait = target - now_ns();
            if (wait < 0) wait = 0;
            struct timespec ts = {wait / 1000000000LL, wait % 1000000000LL};
            ppoll(fds, 1, &ts, NULL);
        }
        if (fds[0].revents) drain(self);
        if (target != until && closing(self)) return -1;
    }
}

/* Room for every batch queued was made by submit(), so no report is ever lost
 * (a lost one would shift every later batch's actual time onto the wrong batch). */
static void
record(Pacer *self, int64_t actual, int error)
{
    pthread_mutex_lock(&self->lock);
    self->done[self->done_len++] = actual;
    self->queued--;
    if (error) {
        self->send_errors++;
        if (error == ECONNREFUSED) self->refused++;
        self->last_errno = error;
    }
    pthread_mutex_unlock(&self->lock);
}

/* Send payloads [first, first + count) of chunk; 0 or the errno that gave it up. */
static int
send_batch(Pacer *self, Chunk *chunk, Py_ssize_t first, int count)
{
    struct mmsghdr msgs[count];
    struct iovec iov[count];
    int sent = 0;
    while (sent < count) {
        int n;
        if (count - sent == 1) {
            Py_ssize_t index = first + sent;
            ssize_t r = send(self->fd, chunk->data + chunk->offsets[index],
                             (size_t)chunk->lengths[index], MSG_DONTWAIT);
            n = r < 0 ? -1 : 1;
        } else {
            for (int i = sent; i < count; i++) {
                Py_ssize_t index = first + i;
                iov[i].iov_base = chunk->data + chunk->offsets[index];
                iov[i].iov_len = (size_t)chunk->lengths[index];
                memset(&msgs[i], 0, sizeof msgs[i]);
                msgs[i].msg_hdr.msg_iov = &iov[i];
                msgs[i].msg_hdr.msg_iovlen = 1;
            }
            n = sendmmsg(self->fd, msgs + sent, (unsigned)(count - sent), MSG_DONTWAIT);
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS || errno == EINTR) {
                if (closing(self)) return errno;
                continue;  /* late already: retry at once, the lag shows it */
            }
            return errno;
        }
        sent += n;
    }
    return 0;
}

static void *
pacer_thread(void *arg)
{
    Pacer *self = arg;
    prctl(PR_SET_TIMERSLACK, (unsigned long)self->timer_slack_ns, 0, 0, 0);
    for (;;) {
        pthread_mutex_lock(&self->lock);
        while (self->head == NULL && !self->closing) {
            /* nothing to send: read the replies, and look again within a slice */
            pthread_mutex_unlock(&self->lock);
            drain(self);
            struct pollfd fds[2] = {{self->fd, POLLIN, 0}, {self->wakefd, POLLIN, 0}};
            poll(fds, 2, (int)(SLEEP_SLICE_NS / 1000000));
            if (fds[1].revents & POLLIN) {
                uint64_t count;
                ssize_t ignored = read(self->wakefd, &count, sizeof count);
                (void)ignored;
            }
            pthread_mutex_lock(&self->lock);
        }
        if (self->closing) {
            pthread_mutex_unlock(&self->lock);
            break;
        }
        Chunk *chunk = self->head;
        self->head = chunk->next;
        if (self->head == NULL) self->tail = NULL;
        pthread_mutex_unlock(&self->lock);
        Py_ssize_t payload = 0;
        for (Py_ssize_t b = 0; b < chunk->batches; b++) {
            int64_t deadline = chunk->send_at[b];
            if (sleep_until(self, deadline - self->spin_ns) < 0) break;
            while (now_ns() < deadline) {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
            }
            int64_t actual = now_ns();
            int error = send_batch(self, chunk, payload, chunk->sizes[b]);
            payload += chunk->sizes[b];
            record(self, actual, error);
            drain(self);
        }
        chunk_free(chunk);
    }
    return NULL;
}

static int
Pacer_init(Pacer *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fd", "spin_ns", "max_batch", "timer_slack_ns", "timerfd", NULL};
    int fd = -1, max_batch = 0, use_timerfd = 0;
    long long spin_ns = -1, slack = 0;
    if (self->started) {
        PyErr_SetString(PyExc_RuntimeError, "Pacer already initialised");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$iLiLp", kwlist, &fd, &spin_ns, &max_batch,
                                     &slack, &use_timerfd))
        return -1;
    if (fd < 0 || spin_ns < 0 || max_batch < 1 || max_batch > 1024 || slack < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "Pacer: fd >= 0, spin_ns >= 0, 1 <= max_batch <= 1024, timer_slack_ns >= 1");
        return -1;
    }
    self->fd = fd;
    self->spin_ns = spin_ns;
    self->max_batch = max_batch;
    self->timer_slack_ns = slack;
    self->timerfd = -1;
    self->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->wakefd < 0) goto fail;
    if (use_timerfd && (self->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC)) < 0)
        goto fail;
    if (self->rbuf == NULL && (self->rbuf = malloc((size_t)READ_BATCH * READ_SIZE)) == NULL) {
        errno = ENOMEM;
        goto fail;
    }
    pthread_mutex_init(&self->lock, NULL);
    int error = pthread_create(&self->thread, NULL, pacer_thread, self);
    if (error != 0) {
        pthread_mutex_destroy(&self->lock);
        errno = error;
        goto fail;
    }
    self->started = 1;
    return 0;
fail:
    PyErr_SetFromErrno(PyExc_OSError);
    if (self->wakefd >= 0) close(self->wakefd);
    if (self->timerfd >= 0) close(self->timerfd);
    self->wakefd = self->timerfd = -1;
    return -1;
}

static void
pacer_stop(Pacer *self)
{
    if (!self->started) return;
    pthread_mutex_lock(&self->lock);
    self->closing = 1;
    pthread_mutex_unlock(&self->lock);
    wake(self);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(self->thread, NULL);
    Py_END_ALLOW_THREADS
    self->started = 0;
    while (self->head != NULL) {
        Chunk *next = self->head->next;
        chunk_free(self->head);
        self->head = next;
    }
    self->tail = NULL;
    if (self->timerfd >= 0) {
        close(self->timerfd);
        self->timerfd = -1;
    }
    if (self->wakefd >= 0) {
        close(self->wakefd);
        self->wakefd = -1;
    }
}

static PyObject *
Pacer_submit(Pacer *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3 || !PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "submit(send_at, sizes, payloads: list[bytes])");
        return NULL;
    }
    if (!self->started) {
        PyErr_SetString(PyExc_RuntimeError, "Pacer is closed");
        return NULL;
    }
    Py_buffer at, sizes;
    if (PyObject_GetBuffer(args[0], &at, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &sizes, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&at);
        return NULL;
    }
    PyObject *list = args[2];
    Py_ssize_t batches = at.len / (Py_ssize_t)sizeof(int64_t);
    Py_ssize_t payloads = PyList_GET_SIZE(list);
    Chunk *chunk = NULL;
    if (at.len % sizeof(int64_t) || sizes.len != batches * (Py_ssize_t)sizeof(int32_t)) {
        PyErr_SetString(PyExc_ValueError, "submit: send_at is int64 per batch, sizes int32");
        goto fail;
    }
    const int32_t *size_of = sizes.buf;
    Py_ssize_t total = 0;
    for (Py_ssize_t b = 0; b < batches; b++) {
        if (size_of[b] < 1 || size_of[b] > self->max_batch) {
            PyErr_SetString(PyExc_ValueError, "submit: a batch size is out of 1..max_batch");
            goto fail;
        }
        total += size_of[b];
    }
    if (total != payloads) {
        PyErr_SetString(PyExc_ValueError, "submit: the sizes do not add up to the payloads");
        goto fail;
    }
    Py_ssize_t bytes = 0;
    for (Py_ssize_t i = 0; i < payloads; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "submit: payloads must be bytes");
            goto fail;
        }
        bytes += PyBytes_GET_SIZE(item);
    }
    chunk = calloc(1, sizeof *chunk);
    if (chunk == NULL) goto nomem;
    chunk->batches = batches;
    chunk->payloads = payloads;
    chunk->send_at = malloc((size_t)(batches ? batches : 1) * sizeof(int64_t));
    chunk->sizes = malloc((size_t)(batches ? batches : 1) * sizeof(int32_t));
    chunk->offsets = malloc((size_t)(payloads ? payloads : 1) * sizeof(Py_ssize_t));
    chunk->lengths = malloc((size_t)(payloads ? payloads : 1) * sizeof(Py_ssize_t));
    chunk->data = malloc((size_t)(bytes ? bytes : 1));
    if (!chunk->send_at || !chunk->sizes || !chunk->offsets || !chunk->lengths || !chunk->data)
        goto nomem;
    memcpy(chunk->send_at, at.buf, (size_t)at.len);
    memcpy(chunk->sizes, sizes.buf, (size_t)sizes.len);
    Py_ssize_t offset = 0;
    for (Py_ssize_t i = 0; i < payloads; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        Py_ssize_t length = PyBytes_GET_SIZE(item);
        memcpy(chunk->data + offset, PyBytes_AS_STRING(item), (size_t)length);
        chunk->offsets[i] = offset;
        chunk->lengths[i] = length;
        offset += length;
    }
    PyBuffer_Release(&at);
    PyBuffer_Release(&sizes);
    pthread_mutex_lock(&self->lock);
    Py_ssize_t need = self->done_len + (Py_ssize_t)self->queued + batches;
    if (need > self->done_cap) {
        Py_ssize_t cap = self->done_cap ? self->done_cap : 4096;
        while (cap < need) cap *= 2;
        int64_t *grown = realloc(self->done, (size_t)cap * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&self->lock);
            chunk_free(chunk);
            return PyErr_NoMemory();
        }
        self->done = grown;
        self->done_cap = cap;
    }
    if (self->tail != NULL) self->tail->next = chunk;
    else self->head = chunk;
    self->tail = chunk;
    self->queued += batches;
    pthread_mutex_unlock(&self->lock);
    wake(self);
    Py_RETURN_NONE;
nomem:
    PyErr_NoMemory();
fail:
    chunk_free(chunk);
    PyBuffer_Release(&at);
    PyBuffer_Release(&sizes);
    return NULL;
}

static PyObject *
Pacer_collect(Pacer *self, PyObject *Py_UNUSED(ignored))
{
    pthread_mutex_lock(&self->lock);
    PyObject *out = PyBytes_FromStringAndSize((const char *)self->done,
                                              self->done_len * (Py_ssize_t)sizeof(int64_t));
    if (out != NULL) self->done_len = 0;
    pthread_mutex_unlock(&self->lock);
    return out;
}

static PyObject *
Pacer_replies(Pacer *self, PyObject *Py_UNUSED(ignored))
{
    pthread_mutex_lock(&self->lock);
    PyObject *out = Py_BuildValue(
        "(y#y#y#y#)", self->rdata ? self->rdata : "", self->rdata_len,
        self->rlen ? (const char *)self->rlen : "", self->rcount * (Py_ssize_t)sizeof(int32_t),
        self->rarrived ? (const char *)self->rarrived : "",
        self->rcount * (Py_ssize_t)sizeof(int64_t),
        self->rread ? (const char *)self->rread : "", self->rcount * (Py_ssize_t)sizeof(int64_t));
    if (out != NULL) self->rcount = self->rdata_len = 0;
    pthread_mutex_unlock(&self->lock);
    return out;
}

static PyObject *
Pacer_stats(Pacer *self, PyObject *Py_UNUSED(ignored))
{
    pthread_mutex_lock(&self->lock);
    long long queued = self->queued, errors = self->send_errors, refused = self->refused;
    long long truncated = self->truncated;
    int last = self->last_errno;
    pthread_mutex_unlock(&self->lock);
    return Py_BuildValue("(LLLiL)", queued, errors, refused, last, truncated);
}

static PyObject *
Pacer_close(Pacer *self, PyObject *Py_UNUSED(ignored))
{
    pacer_stop(self);
    Py_RETURN_NONE;
}

static void
Pacer_dealloc(Pacer *self)
{
    pacer_stop(self);
    free(self->done);
    free(self->rdata);
    free(self->rlen);
    free(self->rarrived);
    free(self->rread);
    free(self->rbuf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Pacer_methods[] = {
    {"submit", (PyCFunction)(void (*)(void))Pacer_submit, METH_FASTCALL,
     "submit(send_at, sizes, payloads): queue batches (int64 ns, int32 counts, bytes)."},
    {"collect", (PyCFunction)Pacer_collect, METH_NOARGS,
     "The actual send times (int64 ns, one per batch, in order) since the last call."},
    {"replies", (PyCFunction)Pacer_replies, METH_NOARGS,
     "The replies read since the last call: (data, int32 sizes, int64 arrival ns, int64 read ns)."},
    {"stats", (PyCFunction)Pacer_stats, METH_NOARGS,
     "(batches queued, send errors, refused, last errno, replies truncated)."},
    {"close", (PyCFunction)Pacer_close, METH_NOARGS,
     "Stop the thread now (batches not sent are dropped)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject PacerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "udpkit._fastpath.Pacer",
    .tp_doc = "An open-loop generator's paced sends from a C thread (sleep, spin, send).",
    .tp_basicsize = sizeof(Pacer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Pacer_init,
    .tp_dealloc = (destructor)Pacer_dealloc,
    .tp_methods = Pacer_methods,
};

int
fastpath_add_pacer(PyObject *module)
{
    if (PyType_Ready(&PacerType) < 0) return -1;
    return PyModule_AddObjectRef(module, "Pacer", (PyObject *)&PacerType);
}
