/*
 * udp_loadgen.c -- C reference closed-loop UDP load generator for the udpkit
 * benchmark suite (client side of the greeting protocol).
 *
 * Keeps exactly --concurrency requests in flight on one connected,
 * non-blocking UDP socket.  Request payload: "n<seq>" (decimal), optionally
 * padded with 'x' up to --size bytes.  The expected reply is exactly
 * "Hello, <payload>!".  Replies are matched by content: the seq is parsed
 * back out of the reply and looked up in a ring of in-flight slots
 * (slot = seq % concurrency; each slot stores its current seq so stale and
 * duplicate replies are rejected).  Slot i only ever carries the sequence
 * numbers i, i + C, i + 2C, ... so every seq is unique for the whole run.
 *
 * Requests older than --timeout-ms are counted lost and replaced by new
 * ones, so the loop never stalls.  Latencies (CLOCK_MONOTONIC, ns) go into
 * a log-linear histogram (128 linear sub-buckets per power of two, i.e.
 * < 0.4% relative error).  The first --warmup seconds are not counted.
 *
 * Measurement window: requests *sent* in [warmup_end, warmup_end+duration)
 * are measured.  When the window closes no new requests are sent and the
 * outstanding measured requests are drained (replied or expired), so that
 * sent == received + lost.  duration_s runs from warmup_end to the later of
 * the window end and the last measured reply; rps = received / duration_s.
 *
 * Output: one line of JSON on stdout:
 * {"sent":N,"received":N,"lost":N,"unexpected":N,"duration_s":F,"rps":F,
 *  "p50_us":F,"p90_us":F,"p99_us":F,"p999_us":F,"max_us":F}
 *
 * Open loop (--rate R, requests per second, constant gaps): a request is
 * due at each intended time; the loop sleeps (ppoll, 1 ns timer slack) until
 * --spin-us before it, spins to it, sends one datagram, and counts latency
 * from the *intended* time (no coordinated omission).  --concurrency is then
 * the most requests in flight (a request due while all slots are busy waits,
 * and its latency says so).  This is the independent reference udpkit
 * bench --rate is compared with (benchmarks/bench_latency_load.py).
 *
 * --kernel-ts: a reply's time is the kernel's arrival time (SO_TIMESTAMPNS),
 * not the clock read after recvmmsg returns, so the generator's own wake-up is
 * left out of the latency, as `udpkit bench` does; without it the figure
 * includes that wake-up.
 *
 * Usage: udp_loadgen --host 127.0.0.1 --port 9999 [--concurrency 64]
 *          [--duration 5] [--warmup 1] [--timeout-ms 1000] [--batch 64]
 *          [--size 0] [--rate 0] [--spin-us 50]
 *          [--kernel-ts]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONCURRENCY 1000000L
#define MAX_BATCH 1024L
#define MAX_SIZE 65000L
#define SEQ_DIGITS_MAX 20 /* uint64_t */
#define PREFIX "Hello, "
#define PREFIX_LEN (sizeof(PREFIX) - 1)

/* ---------------------------------------------------------------- time */

static uint64_t now_ns(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        perror("clock_gettime");
        exit(1);
    }
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ----------------------------------------------------------- histogram */

#define HIST_SUB_BITS 7
#define HIST_SUB (1U << HIST_SUB_BITS)
#define HIST_SIZE ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

struct hist {
    uint64_t counts[HIST_SIZE];
    uint64_t total;
    uint64_t max;
};

static unsigned hist_index(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63U - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS;
    uint64_t m = v >> shift; /* in [HIST_SUB, 2*HIST_SUB) */
    return shift * HIST_SUB + (unsigned)m;
}

/* Midpoint of the value range of bucket idx. */
static double hist_value(unsigned idx)
{
    if (idx < HIST_SUB)
        return (double)idx;
    unsigned shift = (idx >> HIST_SUB_BITS) - 1U;
    uint64_t m = idx - shift * HIST_SUB;
    double lo = (double)m * (double)(1ULL << shift);
    double width = (double)(1ULL << shift);
    return lo + (width - 1.0) / 2.0;
}

static void hist_add(struct hist *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    h->total++;
    if (v > h->max)
        h->max = v;
}

/* Value (ns) at quantile q in [0,1]; 0 when empty. */
static double hist_quantile(const struct hist *h, double q)
{
    if (h->total == 0)
        return 0.0;
    double rank_d = q * (double)h->total;
    uint64_t rank = (uint64_t)rank_d;
    if ((double)rank < rank_d)
        rank++;
    if (rank < 1)
        rank = 1;
    if (rank > h->total)
        rank = h->total;
    uint64_t cum = 0;
    for (unsigned i = 0; i < HIST_SIZE; i++) {
        cum += h->counts[i];
        if (cum >= rank) {
            double v = hist_value(i);
            return v > (double)h->max ? (double)h->max : v;
        }
    }
    return (double)h->max;
}

/* ------------------------------------------------------------- helpers */

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int signo)
{
    (void)signo;
    g_stop = 1;
}

static void usage(FILE *out, const char *prog)
{
    fprintf(out,
            "Usage: %s --host 127.0.0.1 --port 9999 [--concurrency 64]\n"
            "          [--duration 5] [--warmup 1] [--timeout-ms 1000]\n"
            "          [--batch 64] [--size 0] [--rate 0] [--spin-us 50]\n"
            "          [--kernel-ts]\n",
            prog);
}

static int parse_long(const char *s, long min, long max, long *out)
{
    char *end = NULL;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_double(const char *s, double min, double max, double *out)
{
    char *end = NULL;
    double v;

    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || *end != '\0' || !(v >= min && v <= max))
        return -1;
    *out = v;
    return 0;
}

/* Write "n<seq>" padded with 'x' to size; returns the length. */
static size_t make_payload(uint64_t seq, size_t size, unsigned char *out)
{
    char digits[SEQ_DIGITS_MAX];
    size_t nd = 0;
    size_t n = 0;

    do {
        digits[nd++] = (char)('0' + (seq % 10U));
        seq /= 10U;
    } while (seq != 0);
    out[n++] = 'n';
    while (nd > 0)
        out[n++] = (unsigned char)digits[--nd];
    if (n < size) {
        memset(out + n, 'x', size - n);
        n = size;
    }
    return n;
}

/*
 * Parse "Hello, n<digits>..." and return 0 with *seq set, or -1.  The full
 * reply is compared byte for byte by the caller once the slot is known.
 */
static int parse_reply_seq(const unsigned char *buf, size_t len, uint64_t *seq)
{
    size_t i = PREFIX_LEN + 1;
    uint64_t v = 0;
    size_t nd = 0;

    if (len < PREFIX_LEN + 3 || memcmp(buf, PREFIX "n", PREFIX_LEN + 1) != 0)
        return -1;
    while (i < len && buf[i] >= '0' && buf[i] <= '9') {
        unsigned d = (unsigned)(buf[i] - '0');
        if (v > (UINT64_MAX - d) / 10U)
            return -1;
        v = v * 10U + d;
        i++;
        nd++;
    }
    if (nd == 0 || nd > SEQ_DIGITS_MAX)
        return -1;
    *seq = v;
    return 0;
}

/* ---------------------------------------------------------------- main */

struct slot {
    uint64_t seq;       /* seq of the request in flight (valid if in_flight) */
    uint64_t next_seq;  /* seq of the next request of this slot */
    uint64_t sent_ns;   /* send time of seq */
    int in_flight;      /* waiting for a reply */
    int queued;         /* waiting to be (re)sent */
    int measured;       /* sent inside the measurement window */
};

int main(int argc, char **argv)
{
    const char *host = NULL;
    long port = -1;
    long concurrency = 64;
    double duration = 5.0;
    double warmup = 1.0;
    long timeout_ms = 1000;
    long batch = 64;
    long size = 0;
    double rate = 0.0;    /* requests/s; 0: closed loop */
    long spin_us = 50;
    int kernel_ts = 0;    /* reply times from SO_TIMESTAMPNS */
    int i;

    for (i = 1; i < argc; i++) {
        const char *opt = argv[i];
        const char *val;

        if (strcmp(opt, "-h") == 0 || strcmp(opt, "--help") == 0) {
            usage(stdout, argv[0]);
            return 0;
        }
        if (strcmp(opt, "--kernel-ts") == 0) {
            kernel_ts = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "%s: missing value for %s\n", argv[0], opt);
            usage(stderr, argv[0]);
            return 2;
        }
        val = argv[++i];
        if (strcmp(opt, "--host") == 0) {
            host = val;
        } else if (strcmp(opt, "--port") == 0) {
            if (parse_long(val, 1, 65535, &port) != 0)
                goto bad_value;
        } else if (strcmp(opt, "--concurrency") == 0) {
            if (parse_long(val, 1, MAX_CONCURRENCY, &concurrency) != 0)
                goto bad_value;
        } else if (strcmp(opt, "--duration") == 0) {
            if (parse_double(val, 0.001, 1e7, &duration) != 0)
                goto bad_value;
        } else if (strcmp(opt, "--warmup") == 0) {
            if (parse_double(val, 0.0, 1e7, &warmup) != 0)
                goto bad_value;
        } else if (strcmp(opt, "--timeout-ms") == 0) {
            if (parse_long(val, 1, 3600L * 1000L, &timeout_ms) != 0)
                goto bad_value;
        } else if (strcmp(opt, "--batch") == 0) {
            if (parse_long(val, 1, MAX_BATCH, &batch) != 0)
                goto bad_value;
        } else if (strcmp(opt, "--rate") == 0) {
            if (parse_double(val, 0.0, 1e8, &rate) != 0)
                goto bad_value;
        } else if (strcmp(opt, "--spin-us") == 0) {
            if (parse_long(val, 0, 1000000L, &spin_us) != 0)
                goto bad_value;
        } else if (strcmp(opt, "--size") == 0) {
            if (parse_long(val, 0, MAX_SIZE, &size) != 0)
                goto bad_value;
        } else {
            fprintf(stderr, "%s: unknown option %s\n", argv[0], opt);
            usage(stderr, argv[0]);
            return 2;
        }
        continue;
bad_value:
        fprintf(stderr, "%s: invalid value for %s: %s\n", argv[0], opt, val);
        return 2;
    }
    if (host == NULL || port < 0) {
        fprintf(stderr, "%s: --host and --port are required\n", argv[0]);
        usage(stderr, argv[0]);
        return 2;
    }

    {
        struct sigaction sa;

        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        if (sigemptyset(&sa.sa_mask) != 0) {
            perror("sigemptyset");
            return 1;
        }
        if (sigaction(SIGINT, &sa, NULL) != 0 ||
            sigaction(SIGTERM, &sa, NULL) != 0) {
            perror("sigaction");
            return 1;
        }
    }

    /* ------------------------------------------------------ socket */
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    char port_str[24];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = strchr(host, ':') != NULL ? AF_INET6 : AF_INET;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_protocol = IPPROTO_UDP;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(port_str, sizeof(port_str), "%ld", port);
    rc = getaddrinfo(host, port_str, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "getaddrinfo(%s): %s\n", host, gai_strerror(rc));
        return 1;
    }
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK,
                    res->ai_protocol);
    if (fd < 0) {
        perror("socket");
        freeaddrinfo(res);
        return 1;
    }
    if (connect(fd, res->ai_addr, res->ai_addrlen) != 0) {
        fprintf(stderr, "connect(%s:%ld): %s\n", host, port, strerror(errno));
        freeaddrinfo(res);
        close(fd);
        return 1;
    }
    freeaddrinfo(res);
    {
        /* Best effort: larger buffers avoid drops with high concurrency. */
        int bufsz = 4 * 1024 * 1024;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bufsz, sizeof(bufsz)) != 0)
            perror("setsockopt(SO_RCVBUF) (ignored)");
        int on = 1;
        if (kernel_ts &&
            setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) != 0) {
            perror("setsockopt(SO_TIMESTAMPNS)");
            close(fd);
            return 1;
        }
        if (setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bufsz, sizeof(bufsz)) != 0)
            perror("setsockopt(SO_SNDBUF) (ignored)");
    }

    /* ------------------------------------------------------ memory */
    size_t C = (size_t)concurrency;
    size_t nb = (size_t)batch;
    size_t req_cap = (size_t)size > 1 + SEQ_DIGITS_MAX
                         ? (size_t)size : 1 + SEQ_DIGITS_MAX;
    size_t rep_cap = PREFIX_LEN + req_cap + 1 + 64; /* slack to spot junk */
    struct slot *slots = calloc(C, sizeof(*slots));
    size_t *queue = calloc(C, sizeof(*queue)); /* ring of slots to send */
    unsigned char *sbufs = malloc(nb * req_cap);
    unsigned char *rbufs = malloc(nb * rep_cap);
    unsigned char *expect = malloc(rep_cap);
    struct iovec *siov = calloc(nb, sizeof(*siov));
    struct iovec *riov = calloc(nb, sizeof(*riov));
    struct mmsghdr *smsgs = calloc(nb, sizeof(*smsgs));
    struct mmsghdr *rmsgs = calloc(nb, sizeof(*rmsgs));
    size_t *sslot = calloc(nb, sizeof(*sslot));
    struct hist *hist = calloc(1, sizeof(*hist));
    /* --kernel-ts: one control buffer per received message. */
    const size_t ctl_cap = CMSG_SPACE(sizeof(struct timespec));
    unsigned char *ctl = calloc(nb, ctl_cap);

    if (!slots || !queue || !sbufs || !rbufs || !expect || !siov || !riov ||
        !smsgs || !rmsgs || !sslot || !hist || !ctl) {
        fprintf(stderr, "out of memory\n");
        free(slots); free(queue); free(sbufs); free(rbufs); free(expect);
        free(siov); free(riov); free(smsgs); free(rmsgs); free(sslot);
        free(hist); free(ctl);
        close(fd);
        return 1;
    }

    size_t q_head = 0, q_len = 0;
    for (size_t s = 0; s < C; s++) {
        slots[s].next_seq = s; /* slot s carries s, s+C, s+2C, ... */
        slots[s].queued = 1;
        queue[(q_head + q_len) % C] = s;
        q_len++;
    }

    uint64_t sent = 0, received = 0, lost = 0, unexpected = 0;
    uint64_t measured_outstanding = 0;
    uint64_t timeout_ns = (uint64_t)timeout_ms * 1000000ULL;
    uint64_t scan_interval_ns = timeout_ns / 10;
    if (scan_interval_ns > 5000000ULL)
        scan_interval_ns = 5000000ULL;
    if (scan_interval_ns < 100000ULL)
        scan_interval_ns = 100000ULL;

    uint64_t t_start = now_ns();
    uint64_t t_measure = t_start + (uint64_t)(warmup * 1e9);
    uint64_t t_end = t_measure + (uint64_t)(duration * 1e9);
    uint64_t t_last_reply = 0;
    uint64_t t_last_scan = t_start;
    uint64_t t_stop_sending = 0; /* when sending actually stopped */
    int sending = 1;
    int send_blocked = 0; /* last send hit EAGAIN: wait for POLLOUT */
    int exit_code = 0;
    double gap_ns = rate > 0.0 ? 1e9 / rate : 0.0;
    double t_next = (double)t_start;   /* open loop: the next intended send time */
    uint64_t spin_ns = (uint64_t)spin_us * 1000ULL;
    if (rate > 0.0)
        prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);

    for (;;) {
        uint64_t now = now_ns();

        if (sending && (now >= t_end || g_stop)) {
            sending = 0;
            t_stop_sending = now;
        }
        if (!sending) {
            if (measured_outstanding == 0)
                break;
            if (now >= t_stop_sending + timeout_ns + scan_interval_ns)
                break; /* safety net; expiry below should have hit */
        }

        /* ---------------------------------------------- send */
        if (sending && q_len > 0 && !send_blocked) {
            if (rate > 0.0) {  /* spin to the intended time once close to it */
                while ((double)now_ns() < t_next && (double)now_ns() >= t_next - (double)spin_ns) {
                }
            }
            while (q_len > 0) {
                size_t n = q_len < nb ? q_len : nb;
                if (rate > 0.0) {
                    if ((double)now_ns() < t_next)
                        break;  /* not due yet */
                    n = 1;
                }
                for (size_t k = 0; k < n; k++) {
                    size_t s = queue[(q_head + k) % C];
                    unsigned char *buf = sbufs + k * req_cap;
                    siov[k].iov_base = buf;
                    siov[k].iov_len = make_payload(slots[s].next_seq,
                                                   (size_t)size, buf);
                    memset(&smsgs[k], 0, sizeof(smsgs[k]));
                    smsgs[k].msg_hdr.msg_iov = &siov[k];
                    smsgs[k].msg_hdr.msg_iovlen = 1;
                    sslot[k] = s;
                }
                uint64_t t_send = rate > 0.0 ? (uint64_t)t_next : now_ns();
                int r = sendmmsg(fd, smsgs, (unsigned int)n, 0);
                if (r < 0) {
                    int e = errno;
                    if (e == EINTR)
                        continue;
                    if (e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS) {
                        send_blocked = 1;
                        break;
                    }
                    if (e == ECONNREFUSED || e == EHOSTUNREACH ||
                        e == ENETUNREACH) {
                        /* Pending ICMP error from an earlier datagram;
                         * nothing was sent, retry on the next round. */
                        break;
                    }
                    fprintf(stderr, "sendmmsg: %s\n", strerror(e));
                    exit_code = 1;
                    goto done;
                }
                for (int k = 0; k < r; k++) {
                    size_t s = sslot[k];
                    struct slot *sl = &slots[s];
                    sl->seq = sl->next_seq;
                    sl->next_seq += (uint64_t)C;
                    sl->sent_ns = t_send;
                    sl->in_flight = 1;
                    sl->queued = 0;
                    sl->measured = t_send >= t_measure;
                    if (sl->measured) {
                        sent++;
                        measured_outstanding++;
                    }
                }
                q_head = (q_head + (size_t)r) % C;
                q_len -= (size_t)r;
                if (rate > 0.0 && r > 0)
                    t_next += gap_ns;
                if ((size_t)r < n) {
                    send_blocked = 1;
                    break;
                }
            }
        }

        /* ---------------------------------------------- wait */
        {
            struct pollfd pfd;
            uint64_t wait_ns = scan_interval_ns;

            now = now_ns();
            if (sending && t_end > now && t_end - now < wait_ns)
                wait_ns = t_end - now;
            if (rate > 0.0 && sending && q_len > 0) {  /* wake spin_ns before the next */
                double until = t_next - (double)spin_ns - (double)now;
                if (until < (double)wait_ns)
                    wait_ns = until > 0.0 ? (uint64_t)until : 0;
            }
            struct timespec wait_ts = {(time_t)(wait_ns / 1000000000ULL),
                                       (long)(wait_ns % 1000000000ULL)};
            if (rate <= 0.0) {  /* closed loop: as before, whole milliseconds */
                uint64_t ms = (wait_ns + 999999ULL) / 1000000ULL;
                wait_ts.tv_sec = (time_t)(ms / 1000ULL);
                wait_ts.tv_nsec = (long)((ms % 1000ULL) * 1000000ULL);
            }
            pfd.fd = fd;
            pfd.events = POLLIN;
            if (sending && send_blocked && q_len > 0)
                pfd.events |= POLLOUT;
            pfd.revents = 0;
            int pr = ppoll(&pfd, 1, &wait_ts, NULL);
            if (pr < 0) {
                if (errno == EINTR)
                    continue;
                perror("poll");
                exit_code = 1;
                goto done;
            }
            if (pr > 0 && (pfd.revents & POLLOUT))
                send_blocked = 0;
            if (pr > 0 && (pfd.revents & (POLLERR | POLLNVAL)) &&
                !(pfd.revents & POLLIN)) {
                /* Pending socket error (e.g. ICMP port unreachable):
                 * collect it so poll does not spin. */
                int soerr = 0;
                socklen_t sl = sizeof(soerr);
                if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0) {
                    perror("getsockopt(SO_ERROR)");
                    exit_code = 1;
                    goto done;
                }
            }
        }
        if (!sending)
            send_blocked = 0;
        else if (send_blocked && q_len == 0)
            send_blocked = 0;

        /* ---------------------------------------------- receive */
        for (;;) {
            for (size_t k = 0; k < nb; k++) {
                riov[k].iov_base = rbufs + k * rep_cap;
                riov[k].iov_len = rep_cap;
                memset(&rmsgs[k], 0, sizeof(rmsgs[k]));
                rmsgs[k].msg_hdr.msg_iov = &riov[k];
                rmsgs[k].msg_hdr.msg_iovlen = 1;
                if (kernel_ts) {
                    rmsgs[k].msg_hdr.msg_control = ctl + k * ctl_cap;
                    rmsgs[k].msg_hdr.msg_controllen = ctl_cap;
                }
            }
            int r = recvmmsg(fd, rmsgs, (unsigned int)nb, MSG_DONTWAIT, NULL);
            if (r < 0) {
                int e = errno;
                if (e == EINTR)
                    continue;
                if (e == EAGAIN || e == EWOULDBLOCK)
                    break;
                if (e == ECONNREFUSED || e == EHOSTUNREACH ||
                    e == ENETUNREACH)
                    break; /* ICMP error; requests will expire */
                fprintf(stderr, "recvmmsg: %s\n", strerror(e));
                exit_code = 1;
                goto done;
            }
            if (r == 0)
                break;
            uint64_t t_read = now_ns();
            /* Kernel times are CLOCK_REALTIME; the monotonic clock's offset
             * from it, read beside t_read, maps them onto send times. */
            int64_t real_minus_mono = 0;
            if (kernel_ts) {
                struct timespec rt;
                clock_gettime(CLOCK_REALTIME, &rt);
                real_minus_mono = (int64_t)((uint64_t)rt.tv_sec * 1000000000ULL +
                                            (uint64_t)rt.tv_nsec) - (int64_t)now_ns();
            }
            for (int k = 0; k < r; k++) {
                const unsigned char *buf = riov[k].iov_base;
                uint64_t t_recv = t_read;
                if (kernel_ts) {
                    for (struct cmsghdr *c = CMSG_FIRSTHDR(&rmsgs[k].msg_hdr); c;
                         c = CMSG_NXTHDR(&rmsgs[k].msg_hdr, c)) {
                        if (c->cmsg_level == SOL_SOCKET &&
                            c->cmsg_type == SCM_TIMESTAMPNS) {
                            struct timespec ts;
                            memcpy(&ts, CMSG_DATA(c), sizeof(ts));
                            int64_t at = (int64_t)((uint64_t)ts.tv_sec * 1000000000ULL +
                                                   (uint64_t)ts.tv_nsec) - real_minus_mono;
                            if (at > 0 && (uint64_t)at <= t_read)
                                t_recv = (uint64_t)at;
                        }
                    }
                }
                size_t len = rmsgs[k].msg_len;
                uint64_t seq;

                if ((rmsgs[k].msg_hdr.msg_flags & MSG_TRUNC) ||
                    parse_reply_seq(buf, len, &seq) != 0) {
                    unexpected++;
                    continue;
                }
                size_t s = (size_t)(seq % (uint64_t)C);
                struct slot *sl = &slots[s];
                if (!sl->in_flight || sl->seq != seq) {
                    unexpected++; /* stale, duplicate or never sent */
                    continue;
                }
                /* Exact content check: "Hello, <payload>!" */
                memcpy(expect, PREFIX, PREFIX_LEN);
                size_t plen = make_payload(seq, (size_t)size,
                                           expect + PREFIX_LEN);
                expect[PREFIX_LEN + plen] = '!';
                if (len != PREFIX_LEN + plen + 1 ||
                    memcmp(buf, expect, len) != 0) {
                    unexpected++;
                    continue;
                }
                sl->in_flight = 0;
                if (sl->measured) {
                    uint64_t lat = t_recv >= sl->sent_ns
                                       ? t_recv - sl->sent_ns : 0;
                    hist_add(hist, lat);
                    received++;
                    measured_outstanding--;
                    t_last_reply = t_recv;
                }
                sl->measured = 0;
                if (sending) {
                    sl->queued = 1;
                    queue[(q_head + q_len) % C] = s;
                    q_len++;
                }
            }
            if ((size_t)r < nb)
                break;
        }

        /* ---------------------------------------------- expire */
        now = now_ns();
        if (now - t_last_scan >= scan_interval_ns) {
            t_last_scan = now;
            for (size_t s = 0; s < C; s++) {
                struct slot *sl = &slots[s];
                if (!sl->in_flight || now - sl->sent_ns < timeout_ns)
                    continue;
                sl->in_flight = 0;
                if (sl->measured) {
                    lost++;
                    measured_outstanding--;
                }
                sl->measured = 0;
                if (sending) {
                    sl->queued = 1;
                    queue[(q_head + q_len) % C] = s;
                    q_len++;
                }
            }
        }
    }

done:
    {
        uint64_t t_window_end = t_stop_sending != 0 ? t_stop_sending
                                                    : now_ns();
        if (t_last_reply > t_window_end)
            t_window_end = t_last_reply;
        double dur = t_window_end > t_measure
                         ? (double)(t_window_end - t_measure) / 1e9 : 0.0;
        double rps = dur > 0.0 ? (double)received / dur : 0.0;

        printf("{\"sent\":%llu,\"received\":%llu,\"lost\":%llu,"
               "\"unexpected\":%llu,\"duration_s\":%.6f,\"rps\":%.1f,"
               "\"p50_us\":%.3f,\"p90_us\":%.3f,\"p99_us\":%.3f,"
               "\"p999_us\":%.3f,\"max_us\":%.3f}\n",
               (unsigned long long)sent, (unsigned long long)received,
               (unsigned long long)lost, (unsigned long long)unexpected,
               dur, rps,
               hist_quantile(hist, 0.50) / 1e3,
               hist_quantile(hist, 0.90) / 1e3,
               hist_quantile(hist, 0.99) / 1e3,
               hist_quantile(hist, 0.999) / 1e3,
               (double)hist->max / 1e3);
        if (fflush(stdout) != 0) {
            perror("fflush");
            exit_code = 1;
        }
    }

    free(slots); free(queue); free(sbufs); free(rbufs); free(expect);
    free(siov); free(riov); free(smsgs); free(rmsgs); free(sslot);
    free(hist);
    free(ctl);
    if (close(fd) != 0) {
        perror("close");
        exit_code = 1;
    }
    return exit_code;
}
