/*
 * greeting_server.c -- C reference UDP "greeting" server for the udpkit
 * benchmark suite.
 *
 * Every datagram <data> is answered, to its sender, with "Hello, <data>!".
 * When the datagram ends in "\n" or "\r\n" the line end is moved after the
 * '!' ("Michael\n" -> "Hello, Michael!\n").  Empty datagrams, datagrams
 * longer than --max-request bytes (default 1024) and truncated datagrams are
 * not answered.
 *
 * The socket is blocking; the main loop is recvmmsg(MSG_WAITFORONE) followed
 * by sendmmsg of all the replies of the batch.
 *
 * Usage: greeting_server [--host 127.0.0.1] [--port 9999] [--batch 64]
 *                        [--duration SECONDS(0=forever)] [--max-request 1024]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define RECV_BUF_SIZE 2048 /* per message; larger datagrams get MSG_TRUNC */
#define GREETING_PREFIX "Hello, "
#define GREETING_PREFIX_LEN (sizeof(GREETING_PREFIX) - 1)
/* prefix + data + '!' (the line end, if any, is part of data's length) */
#define REPLY_BUF_SIZE (GREETING_PREFIX_LEN + RECV_BUF_SIZE + 1)
#define MAX_BATCH 1024
/* Wake up this often even without traffic to notice signals/duration. */
#define POLL_INTERVAL_MS 200

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int signo)
{
    (void)signo;
    g_stop = 1;
}

static void usage(FILE *out, const char *prog)
{
    fprintf(out,
            "Usage: %s [--host 127.0.0.1] [--port 9999] [--batch 64]\n"
            "          [--duration SECONDS(0=forever)] [--max-request 1024]\n",
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

static double now_s(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        perror("clock_gettime");
        exit(1);
    }
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*
 * Build the greeting for data[0..len) into out (capacity REPLY_BUF_SIZE).
 * Returns the reply length.  len must be >= 1 and <= RECV_BUF_SIZE.
 */
static size_t make_greeting(const unsigned char *data, size_t len,
                            unsigned char *out)
{
    size_t body = len;
    size_t eol = 0;
    size_t n = 0;

    if (len >= 2 && data[len - 2] == '\r' && data[len - 1] == '\n')
        eol = 2;
    else if (len >= 1 && data[len - 1] == '\n')
        eol = 1;
    body = len - eol;

    memcpy(out, GREETING_PREFIX, GREETING_PREFIX_LEN);
    n = GREETING_PREFIX_LEN;
    memcpy(out + n, data, body);
    n += body;
    out[n++] = '!';
    memcpy(out + n, data + body, eol);
    n += eol;
    return n;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1";
    long port = 9999;
    long batch = 64;
    long max_request = 1024;
    double duration = 0.0;
    int i;

    for (i = 1; i < argc; i++) {
        const char *opt = argv[i];
        const char *val;

        if (strcmp(opt, "-h") == 0 || strcmp(opt, "--help") == 0) {
            usage(stdout, argv[0]);
            return 0;
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
            if (parse_long(val, 0, 65535, &port) != 0)
                goto bad_value;
        } else if (strcmp(opt, "--batch") == 0) {
            if (parse_long(val, 1, MAX_BATCH, &batch) != 0)
                goto bad_value;
        } else if (strcmp(opt, "--duration") == 0) {
            if (parse_double(val, 0.0, 1e9, &duration) != 0)
                goto bad_value;
        } else if (strcmp(opt, "--max-request") == 0) {
            if (parse_long(val, 1, RECV_BUF_SIZE, &max_request) != 0)
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

    /* Signals: no SA_RESTART, so blocking calls return EINTR. */
    {
        struct sigaction sa;

        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        if (sigemptyset(&sa.sa_mask) != 0) {
            perror("sigemptyset");
            return 1;
        }
        sa.sa_flags = 0;
        if (sigaction(SIGINT, &sa, NULL) != 0 ||
            sigaction(SIGTERM, &sa, NULL) != 0) {
            perror("sigaction");
            return 1;
        }
    }

    /* Resolve and bind. */
    int family = strchr(host, ':') != NULL ? AF_INET6 : AF_INET;
    struct addrinfo hints;
    struct addrinfo *res = NULL;
    char port_str[24];
    int rc;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_protocol = IPPROTO_UDP;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    snprintf(port_str, sizeof(port_str), "%ld", port);
    rc = getaddrinfo(host, port_str, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "getaddrinfo(%s): %s\n", host, gai_strerror(rc));
        return 1;
    }

    int fd = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    if (fd < 0) {
        perror("socket");
        freeaddrinfo(res);
        return 1;
    }
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
        fprintf(stderr, "bind(%s:%ld): %s\n", host, port, strerror(errno));
        freeaddrinfo(res);
        close(fd);
        return 1;
    }
    freeaddrinfo(res);

    {
        struct sockaddr_storage local;
        socklen_t local_len = sizeof(local);

        if (getsockname(fd, (struct sockaddr *)&local, &local_len) != 0) {
            perror("getsockname");
            close(fd);
            return 1;
        }
        if (local.ss_family == AF_INET6)
            port = ntohs(((struct sockaddr_in6 *)&local)->sin6_port);
        else
            port = ntohs(((struct sockaddr_in *)&local)->sin_port);
    }

    /* Periodic wake-up so signals / --duration are always noticed. */
    {
        struct timeval tv;

        tv.tv_sec = POLL_INTERVAL_MS / 1000;
        tv.tv_usec = (POLL_INTERVAL_MS % 1000) * 1000;
        if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) {
            perror("setsockopt(SO_RCVTIMEO)");
            close(fd);
            return 1;
        }
    }

    size_t nb = (size_t)batch;
    unsigned char *rbufs = malloc(nb * RECV_BUF_SIZE);
    unsigned char *sbufs = malloc(nb * REPLY_BUF_SIZE);
    struct sockaddr_storage *addrs = calloc(nb, sizeof(*addrs));
    struct iovec *riov = calloc(nb, sizeof(*riov));
    struct iovec *siov = calloc(nb, sizeof(*siov));
    struct mmsghdr *rmsgs = calloc(nb, sizeof(*rmsgs));
    struct mmsghdr *smsgs = calloc(nb, sizeof(*smsgs));

    if (!rbufs || !sbufs || !addrs || !riov || !siov || !rmsgs || !smsgs) {
        fprintf(stderr, "out of memory\n");
        free(rbufs); free(sbufs); free(addrs); free(riov); free(siov);
        free(rmsgs); free(smsgs);
        close(fd);
        return 1;
    }

    printf("Bind UDP on %s:%ld...\n", host, port);
    if (fflush(stdout) != 0) {
        perror("fflush");
        /* not fatal */
    }

    uint64_t received = 0, replied = 0, dropped = 0;
    double deadline = duration > 0.0 ? now_s() + duration : 0.0;
    int exit_code = 0;

    while (!g_stop) {
        if (deadline > 0.0 && now_s() >= deadline)
            break;

        for (size_t k = 0; k < nb; k++) {
            riov[k].iov_base = rbufs + k * RECV_BUF_SIZE;
            riov[k].iov_len = RECV_BUF_SIZE;
            memset(&rmsgs[k], 0, sizeof(rmsgs[k]));
            rmsgs[k].msg_hdr.msg_name = &addrs[k];
            rmsgs[k].msg_hdr.msg_namelen = sizeof(addrs[k]);
            rmsgs[k].msg_hdr.msg_iov = &riov[k];
            rmsgs[k].msg_hdr.msg_iovlen = 1;
        }

        int n = recvmmsg(fd, rmsgs, (unsigned int)nb, MSG_WAITFORONE, NULL);
        if (n < 0) {
            int e = errno;
            if (e == EINTR || e == EAGAIN || e == EWOULDBLOCK)
                continue;
            /* Transient errors an unconnected UDP socket may report. */
            if (e == ECONNREFUSED || e == ENOBUFS || e == ENOMEM ||
                e == EHOSTUNREACH || e == ENETUNREACH)
                continue;
            fprintf(stderr, "recvmmsg: %s\n", strerror(e));
            exit_code = 1;
            break;
        }

        /* Build replies for the valid datagrams. */
        unsigned int nsend = 0;
        for (int k = 0; k < n; k++) {
            size_t len = rmsgs[k].msg_len;
            int flags = rmsgs[k].msg_hdr.msg_flags;

            received++;
            if (len == 0 || (flags & MSG_TRUNC) || len > RECV_BUF_SIZE ||
                len > (size_t)max_request) {
                dropped++;
                continue;
            }
            unsigned char *out = sbufs + (size_t)nsend * REPLY_BUF_SIZE;
            size_t rlen = make_greeting(riov[k].iov_base, len, out);

            siov[nsend].iov_base = out;
            siov[nsend].iov_len = rlen;
            memset(&smsgs[nsend], 0, sizeof(smsgs[nsend]));
            smsgs[nsend].msg_hdr.msg_name = &addrs[k];
            smsgs[nsend].msg_hdr.msg_namelen = rmsgs[k].msg_hdr.msg_namelen;
            smsgs[nsend].msg_hdr.msg_iov = &siov[nsend];
            smsgs[nsend].msg_hdr.msg_iovlen = 1;
            nsend++;
        }

        /* Send them all; sendmmsg may send fewer than asked. */
        unsigned int off = 0;
        while (off < nsend) {
            int s = sendmmsg(fd, smsgs + off, nsend - off, 0);
            if (s < 0) {
                int e = errno;
                if (e == EINTR)
                    continue;
                if (e == EAGAIN || e == EWOULDBLOCK || e == ENOBUFS ||
                    e == ENOMEM || e == ECONNREFUSED || e == EHOSTUNREACH ||
                    e == ENETUNREACH || e == EPERM || e == EACCES ||
                    e == EINVAL || e == EMSGSIZE || e == EAFNOSUPPORT ||
                    e == EDESTADDRREQ || e == EADDRNOTAVAIL) {
                    /* The first message failed: drop it, go on. */
                    dropped++;
                    off++;
                    continue;
                }
                fprintf(stderr, "sendmmsg: %s\n", strerror(e));
                exit_code = 1;
                break;
            }
            replied += (unsigned int)s;
            off += (unsigned int)s;
        }
        if (exit_code != 0) {
            /* Replies we could not send count as dropped. */
            dropped += nsend - off;
            break;
        }
    }

    printf("received=%llu replied=%llu dropped=%llu\n",
           (unsigned long long)received, (unsigned long long)replied,
           (unsigned long long)dropped);
    if (fflush(stdout) != 0)
        perror("fflush");

    free(rbufs); free(sbufs); free(addrs); free(riov); free(siov);
    free(rmsgs); free(smsgs);
    if (close(fd) != 0) {
        perror("close");
        exit_code = 1;
    }
    return exit_code;
}
