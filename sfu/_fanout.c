/*
 * sfu/_fanout.c: the per-subscriber half of the forwarding hot path, compiled.
 *
 * Why C here, when everything else is Python: the goal is CPU per forwarded packet
 * no worse than Janus's. Measured in a meeting of 16 (docs/benchmarks-history.md
 * "Where the CPU goes now"), the Python loop over subscribers (Slot.forward: rewrite,
 * one SRTP protect, one sendto) cost ~17 us of user CPU per forwarded packet, 43 % of it in the
 * interpreter, against ~3 us of libsrtp and ~10 us of kernel. Moving just that loop here
 * removes the interpreter from the per-subscriber work; everything done once per
 * inbound packet (unprotect, parse, key-frame and silence detection, last-N) stays in
 * Python, as does every rare case.
 *
 * The contract with sfu/track.py: ``fanout`` handles a lane only in the common case (the
 * slot is active, its run has started, no key frame awaited, its peer's outbound is
 * resolved and current, the extension block fits RFC 8285's one-byte form, the packet is
 * not from before the run). Any other lane is left untouched and its index returned,
 * and ``Slot.forward`` (the complete, general path) handles it. Both paths write the same
 * bytes: tests/test_fanout.py checks that, packet by packet, through real libsrtp.
 *
 * SRTP is pylibsrtp's own libsrtp (its ``srtp_protect``, RFC 3711 §3.3, by address from
 * cffi) on aiortc's outbound session: the same function the Python path calls. The
 * datagram goes out through a dup() of the nominated pair's UDP socket, so a socket
 * aioice closes can never be confused with a later one that reuses its number.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUFFER 1500          /* bytes; the Python path's limit too (sfu/srtp.py) */
#define MAX_TRAILER (16 + 128) /* SRTP_MAX_TRAILER_LEN: auth tag + MKI room */
#define SENT_MAP 512         /* out seq % 512 -> (out seq << 16 | in seq), for NACK */
/* The drop log: the publisher packets a started run dropped (lane_drop), newest last, so
 * that a late packet and a NACK still find their offsets (sfu/track.py drop_shift). */
#define DROP_LOG 256
#define LOG_HAS_PID ((uint64_t)1 << 31) /* entry: seq | PictureID << 16 | these flags */
#define LOG_NEW_PICTURE ((uint64_t)1 << 32)
#define TID_ALL 255 /* Lane.max_tid: no temporal filtering (the default) */
/* 0xBEDE head + MID (<= 16) + level + ast + transport-wide sequence number + pad */
#define MAX_EXT (4 + 18 + 2 + 4 + 3 + 3)
/* Transport-wide sequence numbers stamped and not yet read by TransportCc (Python,
 * sfu/transportcc.py), which reads them at every feedback: a subscriber gets a few
 * hundred packets a second and a feedback every 50-250 ms. */
#define TWCC_LOG 4096
#define WIRE_OVERHEAD (10 + 8 + 20) /* logged sizes are on the wire: SRTP tag, UDP, IPv4 */
/* A run: the packets for one peer staged for one UDP GSO send (udp(7), UDP_SEGMENT).
 * The kernel takes at most 64 segments (UDP_MAX_SEGMENTS) and 64 KiB per send. */
#define RUN_SEGMENTS 32
#define RUN_BYTES (RUN_SEGMENTS * BUFFER)
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103 /* linux/udp.h, since Linux 4.18 */
#endif

/* libsrtp 2: srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr) */
typedef int (*srtp_protect_fn)(void *ctx, void *rtp, int *len);

static PyObject *component_one; /* aioice's key for component 1 in ``_nominated`` */

/* --- Sender: where and how one RawPeer's packets go --------------------------------- */

typedef struct {
    PyObject_HEAD
    srtp_protect_fn protect;
    void *ctx;
    PyObject *session;   /* the pylibsrtp Session: it frees ctx when it is collected */
    PyObject *nominated; /* aioice's dict component -> nominated pair */
    PyObject *pair;      /* the pair this sender was pointed at */
    int fd;              /* our dup() of the pair's socket, -1 when not pointed */
    struct sockaddr_storage addr;
    socklen_t addrlen;
    PyObject *tap;       /* tests only: called with each plaintext packet before protect */
    /* The run (see "Batch" below): protected packets for this peer, back to back, every
     * one run_seg bytes long except perhaps the last (then run_closed). */
    uint8_t *run;        /* RUN_BYTES, allocated on first use */
    int run_len, run_segs, run_seg, run_closed;
    unsigned long long lost; /* staged packets point()/clear() discarded, for the Batch */
    PyObject *queued;    /* borrowed: the Batch whose pending list holds us, or NULL */
    int gso;             /* 0 once the kernel refused UDP_SEGMENT on this socket */
    /* Transport-wide congestion control (draft-holmer-rmcat-transport-wide-cc-
     * extensions-01 §2): every packet to this peer carries the next number of one 16-bit
     * sequence, in its one-byte element twcc_id (0: off); each number's size and send
     * time wait in twcc_log for TransportCc.drain. */
    int twcc_id;
    uint16_t twcc_seq;
    struct twcc_sent { uint16_t seq, size; double at; } *twcc_log;
    int twcc_n;
    unsigned long long twcc_overflow; /* numbers not logged: the log was full */
} Sender;

/* The next transport-wide sequence number, logged with its size on the wire (``size``
 * bytes of RTP before SRTP) and send time. */
static uint16_t twcc_note(Sender *s, Py_ssize_t size, double at) {
    const uint16_t seq = s->twcc_seq++;
    size += WIRE_OVERHEAD;
    if (s->twcc_n < TWCC_LOG) {
        struct twcc_sent *e = &s->twcc_log[s->twcc_n++];
        e->seq = seq;
        e->size = (uint16_t)(size > 0xFFFF ? 0xFFFF : size);
        e->at = at;
    } else {
        s->twcc_overflow++;
    }
    return seq;
}

static void sender_clear(Sender *s) {
    /* Staged packets were protected for the old destination's session: not sent. They
     * are counted as lost by the Batch that still holds this sender (it sends none). */
    s->lost += (unsigned long long)s->run_segs;
    s->run_len = s->run_segs = s->run_closed = 0;
    s->protect = NULL;
    s->ctx = NULL;
    Py_CLEAR(s->session);
    Py_CLEAR(s->nominated);
    Py_CLEAR(s->pair);
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

static int Sender_init(Sender *s, PyObject *args, PyObject *kw) {
    static char *names[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, ":Sender", names))
        return -1;
    sender_clear(s);
    return 0;
}

static PyObject *Sender_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    Sender *s = (Sender *)type->tp_alloc(type, 0);
    if (s != NULL) {
        s->fd = -1;
        s->gso = 1;
    }
    return (PyObject *)s;
}

static void Sender_dealloc(Sender *s) {
    PyObject_GC_UnTrack(s);
    sender_clear(s);
    Py_CLEAR(s->tap);
    PyMem_Free(s->run); /* never while staged: a Batch holding us holds a reference */
    PyMem_Free(s->twcc_log);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static int Sender_traverse(Sender *s, visitproc visit, void *arg) {
    Py_VISIT(s->tap);
    Py_VISIT(s->session);
    Py_VISIT(s->nominated);
    Py_VISIT(s->pair);
    return 0;
}

static int Sender_tp_clear(Sender *s) {
    sender_clear(s);
    Py_CLEAR(s->tap);
    return 0;
}

PyDoc_STRVAR(Sender_point_doc,
"point(protect, ctx, session, nominated, pair, fileno, host, port)\n\n"
"Send through ``pair`` from now on: ``protect`` and ``ctx`` are the addresses of\n"
"libsrtp's srtp_protect and of the session's srtp_t, ``session`` keeps that context\n"
"alive, ``fileno`` is the pair's UDP socket (duplicated here), ``host``/``port`` the\n"
"remote address (an IPv4 or IPv6 literal). Raises OSError or ValueError.");

static PyObject *Sender_point(Sender *s, PyObject *args) {
    unsigned long long protect, ctx;
    PyObject *session, *nominated, *pair;
    int fileno, port;
    const char *host;
    if (!PyArg_ParseTuple(args, "KKOO!Oisi:point", &protect, &ctx, &session, &PyDict_Type,
                          &nominated, &pair, &fileno, &host, &port))
        return NULL;
    if (protect == 0 || ctx == 0) {
        PyErr_SetString(PyExc_ValueError, "null srtp_protect or context");
        return NULL;
    }
    struct sockaddr_storage addr;
    socklen_t addrlen;
    memset(&addr, 0, sizeof addr);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&addr;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        addrlen = sizeof *v4;
    } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        addrlen = sizeof *v6;
    } else {
        PyErr_Format(PyExc_ValueError, "not an IP address literal: %s", host);
        return NULL;
    }
    int fd = fcntl(fileno, F_DUPFD_CLOEXEC, 0);
    if (fd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    sender_clear(s);
    s->protect = (srtp_protect_fn)(uintptr_t)protect;
    s->ctx = (void *)(uintptr_t)ctx;
    Py_INCREF(session);
    s->session = session;
    Py_INCREF(nominated);
    s->nominated = nominated;
    Py_INCREF(pair);
    s->pair = pair;
    s->fd = fd;
    s->addr = addr;
    s->addrlen = addrlen;
    Py_RETURN_NONE;
}

static PyObject *Sender_clear_method(Sender *s, PyObject *unused) {
    sender_clear(s);
    Py_RETURN_NONE;
}

/* Pointed, and the pair is still the nominated one (RFC 8445 §8.1.1: it may change). */
static int sender_ready(Sender *s) {
    if (s->ctx == NULL)
        return 0;
    PyObject *current = PyDict_GetItemWithError(s->nominated, component_one);
    if (current == NULL && PyErr_Occurred())
        PyErr_Clear();
    return current == s->pair;
}

static PyObject *Sender_get_ready(Sender *s, void *closure) {
    return PyBool_FromLong(sender_ready(s));
}

PyDoc_STRVAR(Sender_set_twcc_doc,
"set_twcc(ext_id)\n\n"
"Stamp every packet to this peer with a transport-wide sequence number in the one-byte\n"
"element ``ext_id`` (1..14; 0: stop). fanout() stamps its packets; the Python path\n"
"takes its numbers from twcc_next().");

static PyObject *Sender_set_twcc(Sender *s, PyObject *arg) {
    const long id = PyLong_AsLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    if (id < 0 || id > 14) {
        PyErr_SetString(PyExc_ValueError, "a one-byte extension id is 1..14 (0: off)");
        return NULL;
    }
    if (id && s->twcc_log == NULL) {
        s->twcc_log = PyMem_Malloc(TWCC_LOG * sizeof *s->twcc_log);
        if (s->twcc_log == NULL)
            return PyErr_NoMemory();
    }
    s->twcc_id = (int)id;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Sender_twcc_next_doc,
"twcc_next(size, now) -> int\n\n"
"The next transport-wide sequence number, logged as a packet of ``size`` bytes of RTP\n"
"(its size on the wire: + SRTP tag, UDP and IPv4 headers) sent at ``now``\n"
"(time.monotonic()).");

static PyObject *Sender_twcc_next(Sender *s, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "twcc_next(size, now)");
        return NULL;
    }
    const Py_ssize_t size = PyLong_AsSsize_t(args[0]);
    const double now = PyFloat_AsDouble(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (!s->twcc_id) {
        PyErr_SetString(PyExc_ValueError, "transport-wide numbers are off (set_twcc)");
        return NULL;
    }
    return PyLong_FromLong(twcc_note(s, size, now));
}

PyDoc_STRVAR(Sender_twcc_drain_doc,
"twcc_drain() -> list[tuple[int, int, float]]\n\n"
"The (sequence number, size, send time) of each number given out since the last call,\n"
"in the order given.");

static PyObject *Sender_twcc_drain(Sender *s, PyObject *unused) {
    PyObject *out = PyList_New(s->twcc_n);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < s->twcc_n; i++) {
        const struct twcc_sent *e = &s->twcc_log[i];
        PyObject *t = Py_BuildValue("(iid)", (int)e->seq, (int)e->size, e->at);
        if (t == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, t);
    }
    s->twcc_n = 0;
    return out;
}

static PyMethodDef Sender_methods[] = {
    {"point", (PyCFunction)Sender_point, METH_VARARGS, Sender_point_doc},
    {"set_twcc", (PyCFunction)Sender_set_twcc, METH_O, Sender_set_twcc_doc},
    {"twcc_next", (PyCFunction)(void (*)(void))Sender_twcc_next, METH_FASTCALL,
     Sender_twcc_next_doc},
    {"twcc_drain", (PyCFunction)Sender_twcc_drain, METH_NOARGS, Sender_twcc_drain_doc},
    {"clear", (PyCFunction)Sender_clear_method, METH_NOARGS,
     "Stop sending: close the duplicated socket, drop the session and pair."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Sender_members[] = {
    {"tap", T_OBJECT, offsetof(Sender, tap), 0,
     "Tests only: a callable given every plaintext RTP packet before SRTP (None: off)."},
    {"twcc_id", T_INT, offsetof(Sender, twcc_id), READONLY,
     "The transport-wide sequence number's one-byte element id (0: not stamped)."},
    {"twcc_overflow", T_ULONGLONG, offsetof(Sender, twcc_overflow), READONLY,
     "Numbers given out while the log was full (not seen by the estimator)."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Sender_getset[] = {
    {"ready", (getter)Sender_get_ready, NULL,
     "Pointed, and the pair is still the nominated one.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SenderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._fanout.Sender",
    .tp_doc = "One RawPeer's outbound for fanout(): SRTP context and UDP destination.",
    .tp_basicsize = sizeof(Sender),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = Sender_new,
    .tp_init = (initproc)Sender_init,
    .tp_dealloc = (destructor)Sender_dealloc,
    .tp_traverse = (traverseproc)Sender_traverse,
    .tp_clear = (inquiry)Sender_tp_clear,
    .tp_methods = Sender_methods,
    .tp_members = Sender_members,
    .tp_getset = Sender_getset,
};

/* --- Batch: one UDP GSO send per peer per event-loop turn ----------------------------- *
 *
 * Why: on loopback at 40 000 packets/s, 64 % of the SFU's CPU was the kernel's sendto
 * (docs/benchmarks-history.md "Sends in runs"): a full pass through UDP, IP, routing, the
 * device and (on loopback) the receiver's delivery for every packet. A broadcast frame
 * of 6 packets to 49 viewers was 294 such passes. The packets one peer gets in one turn
 * of the event loop (uvloop reads up to 32 datagrams per readable socket, so a frame
 * arrives in one turn) go to the same address, so they can leave in one sendmsg with a
 * UDP_SEGMENT size (udp(7), Linux >= 4.18): the stack is traversed once and the datagram
 * is cut into the original packets as late as possible (by the NIC when it can). The
 * receiver sees the same datagrams. The kernel requires every segment but the last to
 * be the same size, so a run ends at a packet of another size (a longer one starts the
 * next run; a shorter one is the run's last). Measured in a plain loop on this VM: 7.7
 * us of CPU per packet sent one by one, 3.1 us in runs of 6.
 *
 * Order: within one peer, packets leave in the order they were staged; a lane that
 * Slot.forward must handle flushes its peer's run first (fanout below). Across peers
 * the order was never defined. */

/* Send the run and empty it. Returns the packets lost (the send failed). */
static unsigned long long send_run(Sender *s) {
    const int segs = s->run_segs, len = s->run_len, seg = s->run_seg;
    s->run_len = s->run_segs = s->run_closed = 0;
    if (segs == 0)
        return 0;
    if (s->fd < 0)
        return (unsigned long long)segs;
    if (segs == 1)
        return sendto(s->fd, s->run, (size_t)len, MSG_DONTWAIT, (struct sockaddr *)&s->addr,
                      s->addrlen) < 0;
    if (s->gso) {
        struct iovec iov = {.iov_base = s->run, .iov_len = (size_t)len};
        union {
            char buf[CMSG_SPACE(sizeof(uint16_t))];
            struct cmsghdr align;
        } control;
        memset(&control, 0, sizeof control);
        struct msghdr m = {
            .msg_name = &s->addr,
            .msg_namelen = s->addrlen,
            .msg_iov = &iov,
            .msg_iovlen = 1,
            .msg_control = control.buf,
            .msg_controllen = sizeof control.buf,
        };
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        const uint16_t size = (uint16_t)seg;
        memcpy(CMSG_DATA(c), &size, sizeof size);
        if (sendmsg(s->fd, &m, MSG_DONTWAIT) >= 0)
            return 0;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
            return (unsigned long long)segs; /* buffer full: lost, as single sends would be */
        /* Refused (EIO: no checksum offload on older kernels; EINVAL/EMSGSIZE: segments
         * too big for the route's MTU; or no UDP GSO at all): one by one from now on. */
        s->gso = 0;
    }
    unsigned long long failed = 0;
    for (int off = 0; off < len; off += seg) {
        const int n = len - off < seg ? len - off : seg;
        if (sendto(s->fd, s->run + off, (size_t)n, MSG_DONTWAIT, (struct sockaddr *)&s->addr,
                   s->addrlen) < 0)
            failed++;
    }
    return failed;
}

typedef struct {
    PyObject_HEAD
    Sender **pending; /* strong references: the senders with a staged run */
    Py_ssize_t count, cap;
    unsigned long long sends, packets, failed; /* flushed so far: runs sent, their packets */
} Batch;

/* send_run, counted in b (the Batch holding s; NULL only when nothing is staged). */
static unsigned long long batch_send(Batch *b, Sender *s) {
    if (b != NULL && s->run_segs) {
        b->sends++;
        b->packets += (unsigned long long)s->run_segs;
    }
    return send_run(s);
}

/* Room for one more packet in s's run, at s->run + s->run_len; sends the run first if
 * the packet could not join it. Returns the packets that sending lost, or -1 (no memory). */
static long long run_room(Batch *b, Sender *s) {
    if (s->run == NULL && (s->run = PyMem_Malloc(RUN_BYTES)) == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (s->run_segs == 0 ||
        (!s->run_closed && s->run_segs < RUN_SEGMENTS && s->run_len + BUFFER <= RUN_BYTES))
        return 0;
    return (long long)batch_send(b, s);
}

/* The packet of ``len`` protected bytes at s->run + s->run_len joins the run (or starts
 * the next one); s goes on b's pending list. Returns packets lost, or -1 (no memory). */
static long long run_add(Batch *b, Sender *s, int len) {
    long long lost = 0;
    if (s->run_segs > 0 && len > s->run_seg) { /* longer than the run's segments */
        const int at = s->run_len;
        lost = (long long)batch_send(b, s);
        memmove(s->run, s->run + at, (size_t)len);
    }
    if (s->run_segs == 0)
        s->run_seg = len;
    else if (len < s->run_seg)
        s->run_closed = 1; /* a shorter segment can only be the last */
    s->run_len += len;
    s->run_segs++;
    if (s->queued == NULL) {
        if (b->count == b->cap) {
            Py_ssize_t cap = b->cap ? 2 * b->cap : 64;
            Sender **p = PyMem_Realloc(b->pending, (size_t)cap * sizeof *p);
            if (p == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            b->pending = p;
            b->cap = cap;
        }
        Py_INCREF(s);
        b->pending[b->count++] = s;
        s->queued = (PyObject *)b;
    }
    return lost;
}

/* Send every staged run; returns the packets lost. */
static unsigned long long batch_flush(Batch *b) {
    unsigned long long lost = 0;
    Py_ssize_t count = b->count, cap = b->cap;
    Sender **pending = b->pending; /* ours until the end: nothing below may grow it */
    b->count = b->cap = 0;
    b->pending = NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        Sender *s = pending[i];
        lost += batch_send(b, s) + s->lost;
        s->lost = 0;
        s->queued = NULL;
    }
    b->failed += lost;
    /* last: a sender freed here (its peer left meanwhile) runs no Python, but do not
     * touch the list while anything could */
    for (Py_ssize_t i = 0; i < count; i++)
        Py_DECREF(pending[i]);
    if (b->pending == NULL) { /* keep the array for the next turn */
        b->pending = pending;
        b->cap = cap;
    } else {
        PyMem_Free(pending);
    }
    return lost;
}

static void batch_discard(Batch *b) {
    Py_ssize_t count = b->count;
    b->count = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        Sender *s = b->pending[i];
        s->run_len = s->run_segs = s->run_closed = 0;
        s->lost = 0;
        s->queued = NULL;
        Py_DECREF(s);
    }
}

static PyObject *Batch_flush(Batch *b, PyObject *unused) {
    return PyLong_FromUnsignedLongLong(batch_flush(b));
}

static PyObject *Batch_get_pending(Batch *b, void *closure) {
    return PyBool_FromLong(b->count > 0);
}

static int Batch_init(Batch *b, PyObject *args, PyObject *kw) {
    static char *names[] = {NULL};
    return PyArg_ParseTupleAndKeywords(args, kw, ":Batch", names) ? 0 : -1;
}

static void Batch_dealloc(Batch *b) {
    PyObject_GC_UnTrack(b);
    batch_discard(b);
    PyMem_Free(b->pending);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static int Batch_traverse(Batch *b, visitproc visit, void *arg) {
    for (Py_ssize_t i = 0; i < b->count; i++)
        Py_VISIT(b->pending[i]);
    return 0;
}

static int Batch_tp_clear(Batch *b) {
    batch_discard(b);
    return 0;
}

static PyMethodDef Batch_methods[] = {
    {"flush", (PyCFunction)Batch_flush, METH_NOARGS,
     "flush() -> int: send every staged run now; returns the packets lost (a send\n"
     "failed, or a sender was re-pointed or cleared while its packets waited)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Batch_members[] = {
    {"sends", T_ULONGLONG, offsetof(Batch, sends), READONLY, "Runs sent so far."},
    {"packets", T_ULONGLONG, offsetof(Batch, packets), READONLY, "Packets in those runs."},
    {"failed", T_ULONGLONG, offsetof(Batch, failed), READONLY,
     "Packets flush() reported lost so far."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef Batch_getset[] = {
    {"pending", (getter)Batch_get_pending, NULL, "Some run waits for flush().", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._fanout.Batch",
    .tp_doc = "The runs fanout() staged, per peer, until flush() sends each with UDP GSO.",
    .tp_basicsize = sizeof(Batch),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Batch_init,
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_traverse = (traverseproc)Batch_traverse,
    .tp_clear = (inquiry)Batch_tp_clear,
    .tp_methods = Batch_methods,
    .tp_members = Batch_members,
    .tp_getset = Batch_getset,
};

/* --- Lane: one slot's rewrite state --------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *sender; /* a Sender, or None */
    char active, waiting_key, started, one_byte, paced;
    char vp8; /* simulcast: rewrite the VP8 PictureID / TL0PICIDX (vp8_rewrite) */
    int picture_offset, tl0_offset; /* added mod 2^15 (2^7 for 7-bit ids) and mod 2^8 */
    int pt;
    unsigned int ssrc, ts_offset, last_out_ts;
    int seq_offset, last_in_seq, resume_seq, last_out_seq; /* 16-bit values */
    double last_out_time;
    unsigned long long packets, octets;
    uint8_t mid_elem[17]; /* the whole one-byte MID element, header included */
    int mid_len;
    int level_head, ast_head; /* one-byte element headers, -1 when not negotiated */
    uint8_t bare[MAX_EXT]; /* the block when neither level nor abs-send-time is kept */
    int bare_len;
    int64_t sent_map[SENT_MAP];
    /* Temporal layers (RFC 7741 §4.2 TID; docs/SFU.md "Simulcast"): drop pictures whose
     * TID is above max_tid (TID_ALL: filter nothing); go up only at a layer sync (Y) or a
     * key frame. One decision per picture, at its first packet (max_pic, pic_drop). */
    int max_tid, tid_cur, max_pic;
    char pic_drop;
    unsigned int dropped, pictures_dropped; /* in this run: every lane_drop, pictures */
    unsigned long long temporal_dropped;    /* packets dropped for their TID, ever */
    uint64_t drop_log[DROP_LOG];            /* index: dropped % DROP_LOG */
} Lane;

/* RFC 8285 §4.2: "0xBEDE", length in 32-bit words, then the elements, zero-padded.
 * Returns the block's length (0: no elements, no block), or -1 if it cannot be written
 * here (then the Python path writes it). */
/* With twcc_id (1..14; 0: none) a transport-wide sequence number element comes last,
 * its value 0 until the caller stamps it at *twcc_at. */
static int build_ext(const Lane *l, const uint8_t *level, Py_ssize_t level_len,
                     const uint8_t *ast, Py_ssize_t ast_len, int twcc_id, int *twcc_at,
                     uint8_t *out) {
    if (!l->one_byte || (level != NULL && level_len != 1) || (ast != NULL && ast_len != 3))
        return -1;
    int n = 4;
    memcpy(out + n, l->mid_elem, (size_t)l->mid_len);
    n += l->mid_len;
    if (level != NULL && l->level_head >= 0) {
        out[n++] = (uint8_t)l->level_head;
        out[n++] = level[0];
    }
    if (ast != NULL && l->ast_head >= 0) {
        out[n++] = (uint8_t)l->ast_head;
        memcpy(out + n, ast, 3);
        n += 3;
    }
    if (twcc_id) {
        out[n++] = (uint8_t)(twcc_id << 4 | 1); /* RFC 8285 §4.2: length - 1 */
        *twcc_at = n;
        out[n++] = 0;
        out[n++] = 0;
    }
    if (n == 4)
        return 0;
    while (n & 3)
        out[n++] = 0;
    int words = (n - 4) >> 2;
    out[0] = 0xBE;
    out[1] = 0xDE;
    out[2] = (uint8_t)(words >> 8);
    out[3] = (uint8_t)words;
    return n;
}

/* RFC 7741 §4.2: advance the copied descriptor's PictureID by picture_offset and its
 * TL0PICIDX by tl0_offset, leaving everything else; sfu/vp8.py rewrite_descriptor is the
 * same in Python. A simulcast slot's layers number their pictures each on its own; the
 * descriptor is outside the E2EE frame, so the SFU can make them one sequence. */
static inline void vp8_rewrite(const Lane *l, uint8_t *p, Py_ssize_t n) {
    if (n < 3 || !(p[0] & 0x80))
        return;
    const uint8_t x = p[1];
    Py_ssize_t pos = 2;
    if (x & 0x80) { /* I */
        if (p[2] & 0x80) { /* M: 15-bit PictureID */
            if (n < 4)
                return;
            const int pid = ((((p[2] & 0x7F) << 8) | p[3]) + l->picture_offset) & 0x7FFF;
            p[2] = (uint8_t)(0x80 | (pid >> 8));
            p[3] = (uint8_t)pid;
            pos = 4;
        } else {
            p[2] = (uint8_t)((p[2] + l->picture_offset) & 0x7F);
            pos = 3;
        }
    }
    if ((x & 0x40) && pos < n) /* L: TL0PICIDX */
        p[pos] = (uint8_t)(p[pos] + l->tl0_offset);
}

/* Slot.skip: dropping an in-order packet shifts later ones down by one (no hole), and
 * the drop log remembers where, with ``flags`` (LOG_HAS_PID | PictureID << 16 ...). */
static inline void lane_drop(Lane *l, uint16_t seq, uint64_t flags) {
    const uint16_t ahead = (uint16_t)(seq - l->last_in_seq);
    if (l->started && ahead != 0 && ahead < 0x8000) {
        l->last_in_seq = seq;
        l->seq_offset = (uint16_t)(l->seq_offset + 1);
        l->drop_log[l->dropped % DROP_LOG] = seq | flags;
        l->dropped++;
    }
}

static inline void lane_skip(Lane *l, uint16_t seq) { lane_drop(l, seq, 0); }

/* What the temporal filter reads of a VP8 payload descriptor (RFC 7741 §4.2): only a
 * descriptor with PictureID, TL0PICIDX and TID (I, L, T) is filtered (ok), as mediasoup's
 * VP8 EncodingContext does; a key frame is §4.3's (S=1, PID=0, P=0, the start code). */
typedef struct {
    int ok, pid, mask, tid, y, key;
} Vp8Info;

static void vp8_info(const uint8_t *p, Py_ssize_t n, Vp8Info *v) {
    v->ok = 0;
    if (n < 3 || !(p[0] & 0x80) || (p[1] & 0xE0) != 0xE0)
        return;
    Py_ssize_t pos;
    if (p[2] & 0x80) { /* M: 15-bit PictureID */
        if (n < 4)
            return;
        v->pid = ((p[2] & 0x7F) << 8) | p[3];
        v->mask = 0x7FFF;
        pos = 4;
    } else {
        v->pid = p[2];
        v->mask = 0x7F;
        pos = 3;
    }
    pos++; /* TL0PICIDX */
    if (pos >= n)
        return;
    v->tid = p[pos] >> 6; /* |TID|Y| KEYIDX | */
    v->y = (p[pos] >> 5) & 1;
    pos++;
    v->key = (p[0] & 0x17) == 0x10 && n >= pos + 6 && !(p[pos] & 0x01) &&
             p[pos + 3] == 0x9d && p[pos + 4] == 0x01 && p[pos + 5] == 0x2a;
    v->ok = 1;
}

/* The temporal filter for an in-order packet ``seq`` (newer than last_in_seq) of a
 * filtering lane: 1 if it is dropped (and lane_drop'ped), 0 if it goes out. mediasoup's
 * VP8 EncodingContext rule: a new picture is dropped if its TID is above max_tid, or
 * above the layer forwarded so far (tid_cur) without the layer sync bit Y; a key frame
 * syncs every layer; the first picture a run (or the filter) sees is always kept. */
static int lane_temporal(Lane *l, const uint8_t *payload, Py_ssize_t plen, uint16_t seq) {
    Vp8Info v;
    vp8_info(payload, plen, &v);
    if (!v.ok)
        return 0;
    if (v.key && l->max_tid > 2 && l->max_tid != TID_ALL) {
        l->max_tid = TID_ALL; /* back to "all" once a key frame synced every layer */
        l->max_pic = -1;
        return 0;
    }
    uint64_t flags = LOG_HAS_PID | ((uint64_t)v.pid << 16);
    if (l->max_pic >= 0) {
        const int ahead = (v.pid - l->max_pic) & v.mask;
        if (ahead == 0) { /* another packet of the picture decided last */
            if (!l->pic_drop)
                return 0;
            lane_drop(l, seq, flags);
            l->temporal_dropped++;
            return 1;
        }
        if (ahead > v.mask / 2)
            return 0; /* an older picture: it was decided already, it goes out */
    }
    const int drop = l->max_pic >= 0 && !v.key &&
                     (v.tid > l->max_tid || (v.tid > l->tid_cur && !v.y));
    l->max_pic = v.pid;
    l->pic_drop = (char)drop;
    if (drop) {
        lane_drop(l, seq, flags | LOG_NEW_PICTURE);
        /* later pictures close the gap: libwebrtc's VP8 reference finder waits for every
         * PictureID in between (RtpVp8RefFinder), so a hole would stall the decoder */
        l->picture_offset = (l->picture_offset - 1) & 0x7FFF;
        l->pictures_dropped++;
        l->temporal_dropped++;
        return 1;
    }
    if (v.key)
        l->tid_cur = TID_ALL;
    if (v.tid > l->tid_cur)
        l->tid_cur = v.tid;
    else if (l->tid_cur > l->max_tid)
        l->tid_cur = l->max_tid;
    return 0;
}

/* The NACK map: which publisher packet went out as out_seq (Slot.retransmit reads it). */
static inline void lane_note_sent(Lane *l, uint16_t out_seq, uint16_t in_seq) {
    l->sent_map[out_seq % SENT_MAP] = ((int64_t)out_seq << 16) | in_seq;
}

static int Lane_init(Lane *l, PyObject *args, PyObject *kw) {
    static char *names[] = {"sender", NULL};
    PyObject *sender = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|O:Lane", names, &sender))
        return -1;
    if (sender != Py_None && !PyObject_TypeCheck(sender, &SenderType)) {
        PyErr_SetString(PyExc_TypeError, "sender must be a Sender or None");
        return -1;
    }
    Py_INCREF(sender);
    Py_XSETREF(l->sender, sender);
    l->active = 1;
    l->pt = -1;
    l->level_head = l->ast_head = -1;
    l->max_tid = l->tid_cur = TID_ALL;
    l->max_pic = -1;
    for (int i = 0; i < SENT_MAP; i++)
        l->sent_map[i] = -1;
    return 0;
}

static void Lane_dealloc(Lane *l) {
    PyObject_GC_UnTrack(l);
    Py_CLEAR(l->sender);
    Py_TYPE(l)->tp_free((PyObject *)l);
}

static int Lane_traverse(Lane *l, visitproc visit, void *arg) {
    Py_VISIT(l->sender);
    return 0;
}

static int Lane_tp_clear(Lane *l) {
    Py_CLEAR(l->sender);
    return 0;
}

PyDoc_STRVAR(Lane_set_ext_doc,
"set_ext(mid_elem, level_head, ast_head, one_byte)\n\n"
"The subscriber's extension ids, precomputed: the whole one-byte MID element, the\n"
"one-byte headers of a 1-byte audio level and a 3-byte abs-send-time (b'' when not\n"
"negotiated), and whether every element fits RFC 8285's one-byte form.");

static PyObject *Lane_set_ext(Lane *l, PyObject *args) {
    Py_buffer mid, level, ast;
    int one_byte;
    if (!PyArg_ParseTuple(args, "y*y*y*p:set_ext", &mid, &level, &ast, &one_byte))
        return NULL;
    PyObject *result = NULL;
    if (mid.len > (Py_ssize_t)sizeof l->mid_elem || level.len > 1 || ast.len > 1) {
        PyErr_SetString(PyExc_ValueError, "extension element too long for one-byte form");
        goto done;
    }
    memcpy(l->mid_elem, mid.buf, (size_t)mid.len);
    l->mid_len = (int)mid.len;
    l->level_head = level.len ? ((uint8_t *)level.buf)[0] : -1;
    l->ast_head = ast.len ? ((uint8_t *)ast.buf)[0] : -1;
    l->one_byte = (char)one_byte;
    l->bare_len = build_ext(l, NULL, 0, NULL, 0, 0, NULL, l->bare);
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&mid);
    PyBuffer_Release(&level);
    PyBuffer_Release(&ast);
    return result;
}

static int optional_bytes(PyObject *o, const uint8_t **p, Py_ssize_t *n) {
    if (o == Py_None) {
        *p = NULL;
        *n = 0;
        return 0;
    }
    if (!PyBytes_Check(o)) {
        PyErr_SetString(PyExc_TypeError, "expected bytes or None");
        return -1;
    }
    *p = (const uint8_t *)PyBytes_AS_STRING(o);
    *n = PyBytes_GET_SIZE(o);
    return 0;
}

PyDoc_STRVAR(Lane_extensions_doc,
"extensions(level, ast) -> bytes | None\n\n"
"Our RFC 8285 one-byte block carrying our MID and the kept audio level and\n"
"abs-send-time values (each bytes or None), and last, when the lane's Sender stamps\n"
"them, a transport-wide sequence number element of value 0 (RawPeer.stamp fills it);\n"
"None if it needs the general writer.");

static PyObject *Lane_extensions(Lane *l, PyObject *args) {
    PyObject *level_o, *ast_o;
    const uint8_t *level, *ast;
    Py_ssize_t level_len, ast_len;
    if (!PyArg_ParseTuple(args, "OO:extensions", &level_o, &ast_o))
        return NULL;
    if (optional_bytes(level_o, &level, &level_len) || optional_bytes(ast_o, &ast, &ast_len))
        return NULL;
    uint8_t out[MAX_EXT];
    int twcc_at;
    const int twcc_id = l->sender != NULL && Py_IS_TYPE(l->sender, &SenderType)
                            ? ((Sender *)l->sender)->twcc_id : 0;
    int n = build_ext(l, level, level_len, ast, ast_len, twcc_id, &twcc_at, out);
    if (n < 0)
        Py_RETURN_NONE;
    return PyBytes_FromStringAndSize((const char *)out, n);
}

static PyObject *Lane_note_sent(Lane *l, PyObject *args) {
    unsigned int out_seq, in_seq;
    if (!PyArg_ParseTuple(args, "II:note_sent", &out_seq, &in_seq))
        return NULL;
    lane_note_sent(l, (uint16_t)out_seq, (uint16_t)in_seq);
    Py_RETURN_NONE;
}

static PyObject *Lane_sent_as(Lane *l, PyObject *arg) {
    long out_seq = PyLong_AsLong(arg);
    if (out_seq == -1 && PyErr_Occurred())
        return NULL;
    out_seq &= 0xFFFF;
    int64_t entry = l->sent_map[out_seq % SENT_MAP];
    if (entry < 0 || (entry >> 16) != out_seq)
        return PyLong_FromLong(-1);
    return PyLong_FromLong((long)(entry & 0xFFFF));
}

static PyObject *Lane_skip(Lane *l, PyObject *arg) {
    long seq = PyLong_AsLong(arg);
    if (seq == -1 && PyErr_Occurred())
        return NULL;
    lane_skip(l, (uint16_t)seq);
    Py_RETURN_NONE;
}

static PyObject *Lane_temporal(Lane *l, PyObject *const *args, Py_ssize_t nargs) {
    Py_buffer payload;
    if (nargs != 2 || PyObject_GetBuffer(args[0], &payload, PyBUF_SIMPLE) < 0) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "temporal(payload, seq)");
        return NULL;
    }
    const long seq = PyLong_AsLong(args[1]);
    int drop = 0;
    if (!(seq == -1 && PyErr_Occurred()) && l->max_tid != TID_ALL)
        drop = lane_temporal(l, payload.buf, payload.len, (uint16_t)seq);
    PyBuffer_Release(&payload);
    if (PyErr_Occurred())
        return NULL;
    return PyBool_FromLong(drop);
}

static PyObject *Lane_set_max_tid(Lane *l, PyObject *arg) {
    const long tid = PyLong_AsLong(arg);
    if (tid == -1 && PyErr_Occurred())
        return NULL;
    if (tid < 0 || (tid > 3 && tid != TID_ALL)) {
        PyErr_SetString(PyExc_ValueError, "max_tid: 0..3, or 255 for all");
        return NULL;
    }
    if (tid == TID_ALL) {
        if (l->max_tid != TID_ALL)
            l->max_tid = 3; /* every layer, from the next sync point on */
    } else {
        if (l->max_tid == TID_ALL) { /* unfiltered until now: every layer went out */
            l->tid_cur = TID_ALL;
            l->max_pic = -1;
        }
        l->max_tid = (int)tid;
    }
    Py_RETURN_NONE;
}

static PyObject *Lane_begin_run(Lane *l, PyObject *unused) {
    if (l->max_tid == 3)
        l->max_tid = TID_ALL; /* "all" was waiting for a sync point: a run starts at one */
    l->dropped = l->pictures_dropped = 0;
    l->max_pic = -1;
    l->tid_cur = TID_ALL;
    Py_RETURN_NONE;
}

static PyObject *Lane_drop_log(Lane *l, PyObject *unused) {
    const unsigned int n = l->dropped < DROP_LOG ? l->dropped : DROP_LOG;
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (unsigned int i = 0; i < n; i++) {
        PyObject *e = PyLong_FromUnsignedLongLong(l->drop_log[(l->dropped - n + i) % DROP_LOG]);
        if (e == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, e);
    }
    return out;
}

static PyMethodDef Lane_methods[] = {
    {"temporal", (PyCFunction)(void (*)(void))Lane_temporal, METH_FASTCALL,
     "temporal(payload, seq) -> bool: the temporal filter for in-order packet seq\n"
     "(newer than last_in_seq); True: dropped, and skipped as skip() does."},
    {"set_max_tid", (PyCFunction)Lane_set_max_tid, METH_O,
     "set_max_tid(tid): forward TIDs up to tid (0..3), or all (255) from a sync point."},
    {"begin_run", (PyCFunction)Lane_begin_run, METH_NOARGS,
     "begin_run(): a run starts (at a key frame): empty the drop log, forget the\n"
     "temporal state; a pending step up to all layers is done."},
    {"drop_log", (PyCFunction)Lane_drop_log, METH_NOARGS,
     "drop_log() -> list[int]: the run's last drops, oldest first (seq | PictureID << 16\n"
     "| has-PictureID << 31 | new-picture << 32)."},
    {"skip", (PyCFunction)Lane_skip, METH_O,
     "skip(seq): publisher packet seq is not sent here; later ones close the gap."},
    {"set_ext", (PyCFunction)Lane_set_ext, METH_VARARGS, Lane_set_ext_doc},
    {"extensions", (PyCFunction)Lane_extensions, METH_VARARGS, Lane_extensions_doc},
    {"note_sent", (PyCFunction)Lane_note_sent, METH_VARARGS,
     "note_sent(out_seq, in_seq): remember which publisher packet out_seq carried."},
    {"sent_as", (PyCFunction)Lane_sent_as, METH_O,
     "sent_as(out_seq) -> int: the publisher seq sent as out_seq, -1 if forgotten."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Lane_members[] = {
    {"sender", T_OBJECT, offsetof(Lane, sender), READONLY, "The peer's Sender, or None."},
    {"active", T_BOOL, offsetof(Lane, active), 0, "False when last-N leaves it out."},
    {"waiting_key", T_BOOL, offsetof(Lane, waiting_key), 0, "Video waits for a key frame."},
    {"started", T_BOOL, offsetof(Lane, started), 0, "The current run has begun."},
    {"paced", T_BOOL, offsetof(Lane, paced), 0,
     "Its subscriber's link is paced: Slot.forward hands packets to the Pacer."},
    {"pt", T_INT, offsetof(Lane, pt), 0, "Our payload type (-1: not negotiated)."},
    {"ssrc", T_UINT, offsetof(Lane, ssrc), 0, "Our SSRC."},
    {"seq_offset", T_INT, offsetof(Lane, seq_offset), 0, "in seq - out seq, mod 2^16."},
    {"ts_offset", T_UINT, offsetof(Lane, ts_offset), 0, "out ts - in ts, mod 2^32."},
    {"last_in_seq", T_INT, offsetof(Lane, last_in_seq), 0, "Newest publisher seq seen."},
    {"resume_seq", T_INT, offsetof(Lane, resume_seq), 0, "Publisher seq the run began at."},
    {"last_out_seq", T_INT, offsetof(Lane, last_out_seq), 0, "Newest seq sent."},
    {"last_out_ts", T_UINT, offsetof(Lane, last_out_ts), 0, "Its timestamp."},
    {"last_out_time", T_DOUBLE, offsetof(Lane, last_out_time), 0, "When it was sent."},
    {"vp8", T_BOOL, offsetof(Lane, vp8), 0,
     "Rewrite the VP8 PictureID and TL0PICIDX (a simulcast slot)."},
    {"picture_offset", T_INT, offsetof(Lane, picture_offset), 0,
     "Added to the PictureID, mod 2^15 (2^7 for a 7-bit one)."},
    {"tl0_offset", T_INT, offsetof(Lane, tl0_offset), 0, "Added to TL0PICIDX, mod 2^8."},
    {"max_tid", T_INT, offsetof(Lane, max_tid), READONLY,
     "Highest TID forwarded (255: all, no filter; set_max_tid sets it)."},
    {"tid_cur", T_INT, offsetof(Lane, tid_cur), READONLY,
     "Highest TID forwarded since the last sync point (255: all)."},
    {"dropped", T_UINT, offsetof(Lane, dropped), READONLY, "Packets skipped in this run."},
    {"pictures_dropped", T_UINT, offsetof(Lane, pictures_dropped), READONLY,
     "Pictures the temporal filter dropped in this run."},
    {"temporal_dropped", T_ULONGLONG, offsetof(Lane, temporal_dropped), READONLY,
     "Packets the temporal filter dropped, ever."},
    {"packets", T_ULONGLONG, offsetof(Lane, packets), 0, "Packets sent (for our SR)."},
    {"octets", T_ULONGLONG, offsetof(Lane, octets), 0, "Payload octets sent."},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject LaneType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sfu._fanout.Lane",
    .tp_doc = "One slot's rewrite state, shared by Slot.forward and fanout().",
    .tp_basicsize = sizeof(Lane),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lane_init,
    .tp_dealloc = (destructor)Lane_dealloc,
    .tp_traverse = (traverseproc)Lane_traverse,
    .tp_clear = (inquiry)Lane_tp_clear,
    .tp_methods = Lane_methods,
    .tp_members = Lane_members,
};

/* --- fanout ------------------------------------------------------------------------- */

PyDoc_STRVAR(skip_doc,
"skip(lanes, seq) -> None\n\n"
"Slot.skip for every lane: publisher packet ``seq`` is not forwarded to anyone (digital\n"
"silence), and each lane's later sequence numbers close the gap.");

static PyObject *skip(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2 || !PyList_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "skip(list, int)");
        return NULL;
    }
    long seq = PyLong_AsLong(args[1]);
    if (seq == -1 && PyErr_Occurred())
        return NULL;
    Py_ssize_t count = PyList_GET_SIZE(args[0]);
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *l = PyList_GET_ITEM(args[0], i);
        if (!Py_IS_TYPE(l, &LaneType)) {
            PyErr_SetString(PyExc_TypeError, "skip: not a Lane");
            return NULL;
        }
        lane_skip((Lane *)l, (uint16_t)seq);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(fanout_doc,
"fanout(lanes, data, start, end, level, ast, now, batch=None)\n"
"    -> (sent, octets, failed, paused, slow, temporal)\n\n"
"Rewrite, protect and send the publisher packet ``data`` (plaintext RTP, payload\n"
"data[start:end]) for every lane in the common case. ``level``/``ast`` are the audio\n"
"level and abs-send-time values kept (bytes or None), ``now`` is time.monotonic().\n"
"With a ``batch``, each packet joins its peer's run and leaves at ``batch.flush()``;\n"
"without, it is sent at once. Returns packets sent (or staged), their total unprotected\n"
"length, packets lost (SRTP or socket failed; with a batch, a run this call had to send\n"
"early), lanes paused by last-N (skipped, as Slot.forward does), and the indexes of\n"
"lanes left to Slot.forward (or None), and packets the temporal filter dropped\n"
"(Lane.set_max_tid).");

static PyObject *fanout(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7 && nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "fanout takes 7 or 8 arguments");
        return NULL;
    }
    Batch *batch = NULL;
    if (nargs == 8 && args[7] != Py_None) {
        if (!Py_IS_TYPE(args[7], &BatchType)) {
            PyErr_SetString(PyExc_TypeError, "fanout: batch must be a Batch or None");
            return NULL;
        }
        batch = (Batch *)args[7];
    }
    PyObject *lanes = args[0], *data = args[1];
    if (!PyList_Check(lanes) || !PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "fanout(list, bytes, ...)");
        return NULL;
    }
    Py_ssize_t start = PyLong_AsSsize_t(args[2]), end = PyLong_AsSsize_t(args[3]);
    double now = PyFloat_AsDouble(args[6]);
    if (PyErr_Occurred())
        return NULL;
    const uint8_t *level, *ast;
    Py_ssize_t level_len, ast_len;
    if (optional_bytes(args[4], &level, &level_len) || optional_bytes(args[5], &ast, &ast_len))
        return NULL;
    const uint8_t *d = (const uint8_t *)PyBytes_AS_STRING(data);
    Py_ssize_t dlen = PyBytes_GET_SIZE(data);
    int cc = d[0] & 0x0F;
    if (dlen < 12 + 4 * cc || start < 12 + 4 * cc || end < start || end > dlen) {
        PyErr_SetString(PyExc_ValueError, "payload bounds outside the packet");
        return NULL;
    }
    /* RFC 3550 §5.1: the fields read once; every lane rewrites its own copy */
    const uint16_t seq = (uint16_t)(d[2] << 8 | d[3]);
    const uint32_t ts = (uint32_t)d[4] << 24 | (uint32_t)d[5] << 16 | (uint32_t)d[6] << 8 | d[7];
    const uint8_t marker = d[1] & 0x80;
    const Py_ssize_t clen = 4 * cc, plen = end - start;
    const uint8_t *payload = d + start;

    Py_ssize_t count = PyList_GET_SIZE(lanes);
    unsigned long long sent = 0, octets = 0, failed = 0, paused = 0, temporal = 0;
    PyObject *slow = NULL;
    uint8_t stack_buf[BUFFER];
    uint8_t ext_buf[MAX_EXT];
    for (Py_ssize_t i = 0; i < count; i++) {
        Lane *l = (Lane *)PyList_GET_ITEM(lanes, i);
        if (!Py_IS_TYPE((PyObject *)l, &LaneType))
            goto slow_path;
        if (!l->active) {
            /* Paused by last-N: in a 50-person room with last-N 6 that is most lanes of
             * every packet, so it is handled here, not by Slot.forward (drop "last_n"). */
            lane_skip(l, seq);
            paused++;
            continue;
        }
        if (l->pt < 0 || l->paced || /* paced: its subscriber's Pacer sends (sfu/pacer.py) */
            l->waiting_key || !l->started || l->sender == NULL ||
            !Py_IS_TYPE(l->sender, &SenderType) ||
            !sender_ready((Sender *)l->sender))
            goto slow_path;
        const uint8_t *ext;
        int elen, twcc_at = -1;
        const int twcc_id = ((Sender *)l->sender)->twcc_id;
        if (level == NULL && ast == NULL && !twcc_id) {
            ext = l->bare; /* video usually: the constant MID-only block */
            elen = l->bare_len;
        } else {
            ext = ext_buf;
            elen = build_ext(l, level, level_len, ast, ast_len, twcc_id, &twcc_at, ext_buf);
        }
        if (elen < 0)
            goto slow_path;
        const Py_ssize_t total = 12 + clen + elen + plen;
        if (total > BUFFER - MAX_TRAILER)
            goto slow_path; /* the Python path reports it */
        /* RFC 3550 App. A.1 arithmetic: newer within half the sequence space */
        const uint16_t ahead = (uint16_t)(seq - l->last_in_seq);
        const int newer = ahead != 0 && ahead < 0x8000;
        if (!newer && seq != l->resume_seq && (uint16_t)(seq - l->resume_seq) >= 0x8000)
            goto slow_path; /* reordered from before this run: Slot.forward drops it */
        if (!newer && l->dropped)
            goto slow_path; /* late, after drops: Slot.forward finds its offsets in the log */
        if (newer && l->max_tid != TID_ALL && lane_temporal(l, payload, plen, seq)) {
            temporal++;
            continue;
        }
        if (newer)
            l->last_in_seq = seq;
        const uint16_t out_seq = (uint16_t)(seq - l->seq_offset);
        const uint32_t out_ts = ts + l->ts_offset;
        const uint16_t gain = (uint16_t)(out_seq - l->last_out_seq);
        if (gain != 0 && gain < 0x8000) {
            l->last_out_seq = out_seq;
            l->last_out_ts = out_ts;
            l->last_out_time = now;
        }
        lane_note_sent(l, out_seq, seq);

        Sender *s = (Sender *)l->sender;
        uint8_t *buf = stack_buf; /* sent at once, or written straight into the peer's run */
        if (batch != NULL && s->gso) {
            const long long lost = run_room(batch, s);
            if (lost < 0) {
                Py_XDECREF(slow);
                return NULL;
            }
            failed += (unsigned long long)lost;
            buf = s->run + s->run_len;
        }
        buf[0] = (uint8_t)(0x80 | (elen ? 0x10 : 0) | cc); /* V=2, P=0, X, CC */
        buf[1] = (uint8_t)(marker | l->pt);
        buf[2] = (uint8_t)(out_seq >> 8);
        buf[3] = (uint8_t)out_seq;
        buf[4] = (uint8_t)(out_ts >> 24);
        buf[5] = (uint8_t)(out_ts >> 16);
        buf[6] = (uint8_t)(out_ts >> 8);
        buf[7] = (uint8_t)out_ts;
        buf[8] = (uint8_t)(l->ssrc >> 24);
        buf[9] = (uint8_t)(l->ssrc >> 16);
        buf[10] = (uint8_t)(l->ssrc >> 8);
        buf[11] = (uint8_t)l->ssrc;
        uint8_t *w = buf + 12;
        memcpy(w, d + 12, (size_t)clen);
        w += clen;
        memcpy(w, ext, (size_t)elen);
        if (twcc_at >= 0) { /* numbered now: one number per packet that is sent */
            const uint16_t n = twcc_note(s, total, now);
            w[twcc_at] = (uint8_t)(n >> 8);
            w[twcc_at + 1] = (uint8_t)n;
        }
        w += elen;
        memcpy(w, payload, (size_t)plen);
        if (l->vp8)
            vp8_rewrite(l, w, plen);

        if (s->tap != NULL && s->tap != Py_None) { /* tests: what leaves, before SRTP */
            PyObject *r = PyObject_CallFunction(s->tap, "y#", buf, (Py_ssize_t)total);
            if (r == NULL) {
                Py_XDECREF(slow);
                return NULL;
            }
            Py_DECREF(r);
        }
        int len = (int)total;
        if (s->protect(s->ctx, buf, &len) != 0) {
            failed++; /* as the Python path: the packet is lost, counted as send_failed */
            continue;
        }
        if (buf != stack_buf) {
            const long long lost = run_add(batch, s, len); /* sent by Batch.flush */
            if (lost < 0) {
                Py_XDECREF(slow);
                return NULL;
            }
            failed += (unsigned long long)lost;
        } else if (sendto(s->fd, buf, (size_t)len, MSG_DONTWAIT, (struct sockaddr *)&s->addr,
                          s->addrlen) < 0) {
            failed++;
            continue;
        }
        l->packets++;
        l->octets += (unsigned long long)plen;
        sent++;
        octets += (unsigned long long)total;
        continue;
    slow_path:
        /* Slot.forward sends this lane's packet itself, at once: whatever its peer has
         * waiting in a run must leave first, or the peer would get them out of order. */
        if (Py_IS_TYPE((PyObject *)l, &LaneType) && l->sender != NULL &&
            Py_IS_TYPE(l->sender, &SenderType) && ((Sender *)l->sender)->run_segs) {
            Sender *s = (Sender *)l->sender;
            failed += batch_send((Batch *)s->queued, s);
        }
        if (slow == NULL && (slow = PyList_New(0)) == NULL)
            return NULL;
        PyObject *index = PyLong_FromSsize_t(i);
        if (index == NULL || PyList_Append(slow, index) < 0) {
            Py_XDECREF(index);
            Py_DECREF(slow);
            return NULL;
        }
        Py_DECREF(index);
    }
    if (slow == NULL)
        slow = Py_NewRef(Py_None);
    return Py_BuildValue("(KKKKNK)", sent, octets, failed, paused, slow, temporal);
}

static PyMethodDef module_methods[] = {
    {"fanout", (PyCFunction)(void (*)(void))fanout, METH_FASTCALL, fanout_doc},
    {"skip", (PyCFunction)(void (*)(void))skip, METH_FASTCALL, skip_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fanout_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sfu._fanout",
    .m_doc = "The per-subscriber forwarding loop in C (see the comment at the top of "
             "sfu/_fanout.c).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__fanout(void) {
    if (PyType_Ready(&SenderType) < 0 || PyType_Ready(&LaneType) < 0 ||
        PyType_Ready(&BatchType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fanout_module);
    if (m == NULL)
        return NULL;
    component_one = PyLong_FromLong(1);
    if (component_one == NULL || PyModule_AddObjectRef(m, "Sender", (PyObject *)&SenderType) < 0 ||
        PyModule_AddObjectRef(m, "Lane", (PyObject *)&LaneType) < 0 ||
        PyModule_AddObjectRef(m, "Batch", (PyObject *)&BatchType) < 0 ||
        PyModule_AddIntConstant(m, "BUFFER", BUFFER) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
