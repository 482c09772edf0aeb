/*
 * kvm-stats-preload: makes a dynamically linked VMM hold a KVM stats fd for every VM and vCPU
 * it creates, so kvm-stats-otel can read them (QEMU before 8.1 holds none).
 *
 *   LD_PRELOAD=$(kvm-stats-otel helper path) qemu-system-x86_64 -enable-kvm ...
 *
 * It wraps ioctl(2). After a successful KVM_CREATE_VM or KVM_CREATE_VCPU it issues
 * KVM_GET_STATS_FD on the new fd and leaves the stats fd open (close-on-exec, as the kernel
 * makes it) for the life of the process: a scan copies it with pidfd_getfd. When
 * KVM_STATS_OTEL_SOCKET names a receiver's socket (agent --listen PATH), each new stats fd is
 * also sent there, with SCM_RIGHTS and a small JSON header, without waiting to connect or send:
 * if the receiver is not there, the fd is only kept. The receiver answers each message; the
 * helper waits for that answer at most ANSWER_WAIT_MS and says a refusal on stderr (a receiver
 * that is slower than that is not waited for: the fd may still have been taken).
 *
 * If the receiver's backlog is full (someone floods it with connections), the hand-over is
 * retried on a thread of its own, blocked signals and a small stack, for at most RETRY_WAIT_MS:
 * its connect waits for room, woken by the kernel each time the receiver accepts a connection
 * (the receiver takes its whole backlog at every turn). So the VMM's ioctl never waits on the
 * receiver's backlog, a flood only delays a hand-over, and at most MAX_RETRIES wait at once
 * (past that the fd is only kept).
 *
 * What the VMM sees does not change: every ioctl returns what the kernel returned, with the
 * same errno. Any other ioctl costs one comparison. There is no shared mutable state beyond the
 * resolved ioctl pointer and the count of waiting retries (atomic), so any number of threads may
 * create vCPUs at once.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <linux/kvm.h>

#ifndef KVM_GET_STATS_FD
#define KVM_GET_STATS_FD _IO(KVMIO, 0xce) /* Linux 5.14 */
#endif

/* KVM_CREATE_VM and KVM_CREATE_VCPU differ only in bit 6: OR-ing it in makes one comparison
 * match both and nothing else. */
#define CREATE_BIT 0x40UL
_Static_assert((KVM_CREATE_VM | CREATE_BIT) == KVM_CREATE_VCPU, "KVM_CREATE_VM and KVM_CREATE_VCPU differ in more than bit 6");

#define SOCKET_ENV "KVM_STATS_OTEL_SOCKET"

/* The longest a VMM thread waits, inside KVM_CREATE_VM or KVM_CREATE_VCPU, for the receiver's
 * answer: a receiver drains its socket every few milliseconds. */
#define ANSWER_WAIT_MS 100
/* The longest a retry waits to connect to a receiver whose backlog is full, and how many may wait at once. */
#define RETRY_WAIT_MS 10000
#define MAX_RETRIES 64

typedef int (*ioctl_fn)(int, unsigned long, ...);

static int resolve_and_call(int fd, unsigned long request, ...);

/* Starts as a resolver so the hot path needs no "resolved yet?" test. */
static ioctl_fn real_ioctl = resolve_and_call;

/* The receiver's address, read once at load time; sun_path[0] == 0 means none. */
static struct sockaddr_un receiver;
static socklen_t receiver_length;

static ioctl_fn resolve(void)
{
    ioctl_fn fn = (ioctl_fn)dlsym(RTLD_NEXT, "ioctl");
    if (fn == NULL) {
        /* No libc ioctl after us: nothing sensible can run; say why instead of crashing later. */
        static const char message[] = "kvm-stats-preload: dlsym(RTLD_NEXT, \"ioctl\") failed; remove it from LD_PRELOAD\n";
        (void)!write(STDERR_FILENO, message, sizeof message - 1);
        abort();
    }
    __atomic_store_n(&real_ioctl, fn, __ATOMIC_RELEASE);
    return fn;
}

static int resolve_and_call(int fd, unsigned long request, ...)
{
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return resolve()(fd, request, arg);
}

__attribute__((constructor)) static void kvm_stats_preload_init(void)
{
    resolve();
    const char *path = getenv(SOCKET_ENV);
    if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof receiver.sun_path) return;
    receiver.sun_family = AF_UNIX;
    strcpy(receiver.sun_path, path);
    receiver_length = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
}

/* Says a refusal in the receiver's answer on stderr. The answer is JSON, {"accepted":N,
 * "refused":N,...,"reason":"..."} with "reason" last; there is one only when something was
 * refused, so its text is printed as it comes (JSON escapes and all). */
static void report_answer(const char *answer, long vcpu_id)
{
    static const char key[] = "\"reason\":\"";
    const char *reason = strstr(answer, key);
    if (reason == NULL) return;
    reason += sizeof key - 1;
    size_t length = strlen(reason);
    if (length >= 2 && strcmp(reason + length - 2, "\"}") == 0) length -= 2;
    char target[32];
    if (vcpu_id >= 0) snprintf(target, sizeof target, "vCPU %ld", vcpu_id);
    else snprintf(target, sizeof target, "the VM");
    char line[1024];
    int n = snprintf(line, sizeof line, "kvm-stats-preload: %s refused the stats fd of %s: %.*s\n", receiver.sun_path, target, (int)length, reason);
    if (n > 0) (void)!write(STDERR_FILENO, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* Sends one stats fd on a connected socket, without waiting; waits for the answer at most
 * ANSWER_WAIT_MS and says a refusal. */
static void send_stats_fd(int sock, int stats_fd, long vcpu_id)
{
    char header[96];
    int length = vcpu_id >= 0
        ? snprintf(header, sizeof header, "{\"vcpus\":[%ld],\"sender\":\"kvm-stats-preload\"}", vcpu_id)
        : snprintf(header, sizeof header, "{\"vcpus\":[null],\"sender\":\"kvm-stats-preload\"}");
    struct iovec iov = { .iov_base = header, .iov_len = (size_t)length };
    union {
        struct cmsghdr align;
        char bytes[CMSG_SPACE(sizeof(int))];
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.bytes, .msg_controllen = sizeof control.bytes };
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&message);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &stats_fd, sizeof(int));
    if (sendmsg(sock, &message, MSG_DONTWAIT | MSG_NOSIGNAL) == length) {
        struct pollfd ready = { .fd = sock, .events = POLLIN };
        char answer[512];
        if (poll(&ready, 1, ANSWER_WAIT_MS) == 1) {
            /* No control buffer: should fds come with the answer, the kernel closes them. */
            ssize_t n = recv(sock, answer, sizeof answer - 1, MSG_DONTWAIT);
            if (n > 0) {
                answer[n] = '\0';
                report_answer(answer, vcpu_id);
            }
        }
    }
}

static long now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec * 1000L + now.tv_nsec / 1000000L;
}

/* Connects a blocking socket within `wait_ms`: a Unix socket's connect waits for room in a full
 * backlog as long as the socket's send timeout, woken at each accept; a signal cuts the wait
 * short, and it is tried again in what is left. Returns 0 when connected. */
static int connect_within(int sock, long wait_ms)
{
    long deadline = now_ms() + wait_ms;
    for (;;) {
        long left = deadline - now_ms();
        if (left <= 0) return -1;
        struct timeval timeout = { .tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000 };
        if (setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout) < 0) return -1;
        if (connect(sock, (const struct sockaddr *)&receiver, receiver_length) == 0) return 0;
        if (errno != EINTR) return -1;
    }
}

struct retry {
    int stats_fd;
    long vcpu_id;
};

static int retries_waiting;

static void *retry_hand_over(void *argument)
{
    struct retry retry = *(struct retry *)argument;
    free(argument);
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (sock >= 0) {
        /* The stats fd stays open for the life of the process: it is still there to send. */
        if (connect_within(sock, RETRY_WAIT_MS) == 0) send_stats_fd(sock, retry.stats_fd, retry.vcpu_id);
        close(sock);
    }
    __atomic_sub_fetch(&retries_waiting, 1, __ATOMIC_RELAXED);
    return NULL;
}

/* Retries a hand-over on a detached thread (signals blocked: the VMM's handlers run on its own
 * threads), unless MAX_RETRIES already wait. */
static void retry_in_background(int stats_fd, long vcpu_id)
{
    if (__atomic_add_fetch(&retries_waiting, 1, __ATOMIC_RELAXED) > MAX_RETRIES) goto none;
    struct retry *retry = malloc(sizeof *retry);
    if (retry == NULL) goto none;
    *retry = (struct retry){ .stats_fd = stats_fd, .vcpu_id = vcpu_id };
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attributes, 64 * 1024);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t thread;
    int failed = pthread_create(&thread, &attributes, retry_hand_over, retry);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attributes);
    if (failed == 0) return;
    free(retry);
none:
    __atomic_sub_fetch(&retries_waiting, 1, __ATOMIC_RELAXED);
}

/* Sends one stats fd to the receiver: a new connection per fd, so no state is shared between
 * threads. Connecting and sending never wait; the answer is waited for at most ANSWER_WAIT_MS.
 * A receiver whose backlog is full gets the fd from a retry on another thread. Failures only mean
 * the fd is not handed over. */
static void hand_over(int stats_fd, long vcpu_id)
{
    int sock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (sock < 0) return;
    if (connect(sock, (const struct sockaddr *)&receiver, receiver_length) == 0) send_stats_fd(sock, stats_fd, vcpu_id);
    else if (errno == EAGAIN) retry_in_background(stats_fd, vcpu_id);
    close(sock);
}

/* After a successful create: one more ioctl on the new fd, and maybe a hand-over. Kept out of
 * line so the wrapper itself stays a call, an OR, a compare and a return. */
__attribute__((noinline, cold)) static void keep_stats_fd(int new_fd, unsigned long request, void *arg)
{
    int saved_errno = errno;
    int stats_fd = real_ioctl(new_fd, KVM_GET_STATS_FD, NULL);
    if (stats_fd >= 0 && receiver_length != 0) {
        hand_over(stats_fd, request == KVM_CREATE_VCPU ? (long)(unsigned long)arg : -1);
    }
    errno = saved_errno;
}

int ioctl(int fd, unsigned long request, ...)
{
    va_list ap;
    va_start(ap, request);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    int result = __atomic_load_n(&real_ioctl, __ATOMIC_RELAXED)(fd, request, arg);
    if (__builtin_expect((request | CREATE_BIT) == KVM_CREATE_VCPU, 0) && result >= 0) {
        keep_stats_fd(result, request, arg);
    }
    return result;
}
