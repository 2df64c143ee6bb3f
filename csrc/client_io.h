/* Socket calls of the compiled client core (_codec_c.pyx, section "client core").
 *
 * On POSIX systems the blocking channel calls recv/send on the socket's descriptor
 * itself, with the GIL released, into the frame buffer's own memory: no memoryview, no
 * argument parsing, no bytes object per call. Elsewhere (Windows) VF_POSIX_IO is 0 and
 * the channel goes through the Python socket object's methods instead (which release
 * the GIL themselves), so this header needs no winsock code.
 */
#ifndef VF_CLIENT_IO_H
#define VF_CLIENT_IO_H

#include <Python.h>
#include <errno.h>
#include <stdint.h>

/* The next request id: an atomic fetch-and-add, so ids stay unique between threads even
 * on a free-threaded CPython run with the GIL forced off (PYTHON_GIL=0). */
#if defined(_MSC_VER)
#include <intrin.h>
static inline uint64_t vf_next_id(uint64_t *counter)
{ return (uint64_t)_InterlockedExchangeAdd64((volatile __int64 *)counter, 1); }
#else
static inline uint64_t vf_next_id(uint64_t *counter)
{ return __atomic_fetch_add(counter, (uint64_t)1, __ATOMIC_RELAXED); }
#endif

#if defined(_WIN32)

#define VF_POSIX_IO 0
#define VF_EAGAIN(e) 0
static Py_ssize_t vf_io_recv(int fd, void *buf, Py_ssize_t n, int *err)
{ (void)fd; (void)buf; (void)n; *err = ENOSYS; return -1; }
static Py_ssize_t vf_io_send(int fd, const void *buf, Py_ssize_t n, int *err)
{ (void)fd; (void)buf; (void)n; *err = ENOSYS; return -1; }
static Py_ssize_t vf_io_send_now(int fd, const void *buf, Py_ssize_t n, int *err)
{ (void)fd; (void)buf; (void)n; *err = ENOSYS; return -1; }
static int vf_io_timeout(int fd, int sending, double seconds)
{ (void)fd; (void)sending; (void)seconds; return -1; }
static int vf_io_shutdown(int fd) { (void)fd; return -1; }

#else

#include <sys/types.h>
#include <sys/socket.h>
#include <sys/time.h>

#define VF_POSIX_IO 1
#if defined(EWOULDBLOCK) && EWOULDBLOCK != EAGAIN
#define VF_EAGAIN(e) ((e) == EAGAIN || (e) == EWOULDBLOCK)
#else
#define VF_EAGAIN(e) ((e) == EAGAIN)
#endif
#ifdef MSG_NOSIGNAL
#define VF_SEND_FLAGS MSG_NOSIGNAL
#else
#define VF_SEND_FLAGS 0 /* Python ignores SIGPIPE: EPIPE is returned instead */
#endif

/* One recv(2); -1 with *err = errno on failure (EAGAIN: SO_RCVTIMEO expired). */
static Py_ssize_t vf_io_recv(int fd, void *buf, Py_ssize_t n, int *err)
{
    ssize_t r = recv(fd, buf, (size_t)n, 0);
    *err = r < 0 ? errno : 0;
    return (Py_ssize_t)r;
}

/* One send(2) (may be partial); -1 with *err = errno on failure. */
static Py_ssize_t vf_io_send(int fd, const void *buf, Py_ssize_t n, int *err)
{
    ssize_t r = send(fd, buf, (size_t)n, VF_SEND_FLAGS);
    *err = r < 0 ? errno : 0;
    return (Py_ssize_t)r;
}

/* One send(2) that never blocks (MSG_DONTWAIT): what the socket buffer takes now. */
static Py_ssize_t vf_io_send_now(int fd, const void *buf, Py_ssize_t n, int *err)
{
    ssize_t r = send(fd, buf, (size_t)n, VF_SEND_FLAGS | MSG_DONTWAIT);
    *err = r < 0 ? errno : 0;
    return (Py_ssize_t)r;
}

/* SO_RCVTIMEO (sending == 0) or SO_SNDTIMEO: bound each later call to `seconds`, keeping
 * the socket in blocking mode, so that every call stays one syscall. */
static int vf_io_timeout(int fd, int sending, double seconds)
{
    struct timeval tv;
    if (seconds < 0.001) seconds = 0.001; /* a zero timeval would mean "wait forever" */
    tv.tv_sec = (time_t)seconds;
    tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
    return setsockopt(fd, SOL_SOCKET, sending ? SO_SNDTIMEO : SO_RCVTIMEO, &tv, sizeof tv);
}

/* Wake every thread blocked on the socket (recv returns 0, send fails). */
static int vf_io_shutdown(int fd) { return shutdown(fd, SHUT_RDWR); }

#endif

/* The clocks of time.monotonic() and time.time(), read without making float objects.
 * On Linux those are exactly CLOCK_MONOTONIC and CLOCK_REALTIME; elsewhere
 * VF_HAVE_CLOCKS is 0 and the compiled core calls the time module instead, so that its
 * deadlines always compare with the drivers' time.monotonic(). */
#if defined(__linux__)
#include <time.h>
#define VF_HAVE_CLOCKS 1
static inline double vf_monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}
static inline double vf_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec * 1e-6;
}
#else
#define VF_HAVE_CLOCKS 0
static inline double vf_monotonic(void) { return -1.0; }
static inline double vf_wall_ms(void) { return -1.0; }
#endif

#endif /* VF_CLIENT_IO_H */
