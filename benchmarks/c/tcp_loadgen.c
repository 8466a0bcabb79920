/* tcp_loadgen: closed-loop load on a line-framed TCP greeting server.
 *
 * Opens --connections connections, reads each one's welcome line, then keeps
 * --pipeline request lines ("n<seq>\n") in flight on each: every reply line
 * received is answered by one new request line (written in one write per
 * read).  Counts the reply lines that arrive between the end of --warmup
 * and --warmup + --duration seconds, and prints one line of JSON:
 *   {"connections":N,"pipeline":P,"lines":N,"duration_s":F,"rps":F}
 * Linux, loopback benchmarking only.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONN 1024

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN) {
                struct pollfd p = {fd, POLLOUT, 0};
                poll(&p, 1, 100);
                continue;
            }
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_lines(int fd, int count, unsigned long *seq) {
    char buf[65536];
    size_t used = 0;
    for (int i = 0; i < count; i++) {
        if (used + 32 > sizeof(buf)) {
            if (write_all(fd, buf, used) < 0) return -1;
            used = 0;
        }
        used += (size_t)snprintf(buf + used, 32, "n%lu\n", (*seq)++);
    }
    return used ? write_all(fd, buf, used) : 0;
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1";
    int port = 9999, connections = 16, pipeline = 16;
    double duration = 3.0, warmup = 1.0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--host")) host = argv[i + 1];
        else if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--connections")) connections = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--pipeline")) pipeline = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--duration")) duration = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--warmup")) warmup = atof(argv[i + 1]);
        else {
            fprintf(stderr, "unknown option %s\n", argv[i]);
            return 2;
        }
    }
    if (connections < 1 || connections > MAX_CONN || pipeline < 1) {
        fprintf(stderr, "bad --connections or --pipeline\n");
        return 2;
    }
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "bad --host %s (IPv4 only)\n", host);
        return 2;
    }
    struct pollfd fds[MAX_CONN];
    int welcomed[MAX_CONN] = {0};
    unsigned long seq = 0;
    for (int i = 0; i < connections; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
            perror("connect");
            return 1;
        }
        fds[i].fd = fd;
        fds[i].events = POLLIN;
    }
    double start = now_s(), measure_from = start + warmup, measure_to = measure_from + duration;
    unsigned long long lines = 0;
    char buf[65536];
    while (1) {
        double t = now_s();
        if (t >= measure_to) break;
        int ready = poll(fds, (nfds_t)connections, 100);
        if (ready < 0 && errno != EINTR) {
            perror("poll");
            return 1;
        }
        t = now_s();
        for (int i = 0; i < connections && ready > 0; i++) {
            if (!(fds[i].revents & (POLLIN | POLLERR | POLLHUP))) continue;
            ssize_t n = read(fds[i].fd, buf, sizeof(buf));
            if (n <= 0) {
                fprintf(stderr, "connection %d closed by the server\n", i);
                return 1;
            }
            int got = 0;
            for (ssize_t k = 0; k < n; k++) got += buf[k] == '\n';
            if (!welcomed[i] && got > 0) {
                welcomed[i] = 1;
                got -= 1; /* the welcome line */
                if (send_lines(fds[i].fd, pipeline, &seq) < 0) return 1;
            }
            if (got > 0) {
                if (t >= measure_from && t < measure_to) lines += (unsigned long long)got;
                if (send_lines(fds[i].fd, got, &seq) < 0) return 1;
            }
        }
    }
    printf("{\"connections\":%d,\"pipeline\":%d,\"lines\":%llu,\"duration_s\":%.3f,\"rps\":%.1f}\n",
           connections, pipeline, lines, duration, (double)lines / duration);
    for (int i = 0; i < connections; i++) close(fds[i].fd);
    return 0;
}
