/*
 * bench/_receive.c: the load generator's receive path, compiled.
 *
 * Why C here: one generator process plays every receiver of a meeting on one core.
 * At 40 000 forwarded packets/s the Python receive path (SRTP unprotect through cffi,
 * the kernel receive stamp through fcntl.ioctl, finding the probe and counting it) cost
 * ~19 us of the generator's CPU per packet; perf showed 48 % of the generator's time in
 * the interpreter. The generator's core was 80-95 % busy, and a busy measuring process
 * delays its own reads and sends, which makes the measurement noisier than the system
 * it measures. Here the same work is one C call per datagram: uvloop still reads the
 * socket and calls ``datagram_received``, which is an ``Endpoint``.
 *
 * What an Endpoint does with a datagram (the Python code it replaced did the same):
 *   - RFC 7983 section 7: a first byte of 128..191 is RTP or RTCP; RFC 5761 section 4:
 *     a second byte of 192..223 is RTCP. RTP is unprotected with libsrtp (RFC 3711
 *     section 3.4; pylibsrtp's own ``srtp_unprotect`` by address, as sfu/_fanout.c
 *     uses ``srtp_protect``) unless the endpoint is plaintext (the bare reflector);
 *     everything else (STUN, DTLS, RTCP) goes to the Python callable ``other``.
 *   - The arrival time is the kernel's receive stamp of the datagram just read
 *     (socket(7) SIOCGSTAMPNS, CLOCK_REALTIME), moved to CLOCK_MONOTONIC with the offset
 *     read at the same moment: latency is measured to the receiving socket, not to when
 *     this process got round to reading it (docs/BENCHMARKS.md, Method).
 *   - The probe (bench/media.py: magic, stream id, stream sequence, send time) is looked
 *     for right after the RTP header, and the packet is counted in the window whose
 *     [start, end) holds its send time: per (receiver, stream) pair, and in two latency
 *     histograms (to the socket; to this read). A packet without a probe (re-encoded
 *     media) is "unknown" and counted in the window that holds its arrival time.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stddef.h>
#include <linux/sockios.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#define BUFFER 1500       /* bytes: pylibsrtp's per-session buffer, the SFU's limit too */
#define HIST_FINE 5000    /* 1 us buckets below 5 ms, then 1 ms buckets (bench/gen.py) */
#define HIST_SIZE (HIST_FINE + 1000)
#define MAX_WINDOWS 8     /* the runner keeps one open at a time */
#define PROBE_SIZE 20     /* "!4sIIQ" */
#define PROBE_LIMIT 108   /* the probe starts within this many bytes of the packet */
#define MAX_RECEIVERS 4096
#define MAX_STREAMS 8192

static const uint8_t MAGIC[4] = {0xb5, 0xe4, 0xc7, 0x01};

/* libsrtp 2: srtp_err_status_t srtp_unprotect(srtp_t ctx, void *srtp_hdr, int *len_ptr) */
typedef int (*srtp_unprotect_fn)(void *ctx, void *rtp, int *len);

static int64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static inline int bucket(int64_t ns) {
    int64_t us = ns > 0 ? ns / 1000 : 0;
    if (us < HIST_FINE)
        return (int)us;
    int64_t b = HIST_FINE + us / 1000;
    return b < HIST_SIZE ? (int)b : HIST_SIZE - 1;
}

/* --- Counts: the windows, what each receiver has heard, the error counters ----------- */

typedef struct {
    int open;
    long long id;
    int64_t start, end;
    unsigned long long unprobed;
    uint32_t *pairs;     /* [receiver * streams + stream id] -> packets received */
    uint32_t *hist;      /* sent -> reached the receiving socket */
    uint32_t *hist_user; /* sent -> this process read it */
} Window;

typedef struct {
    PyObject_HEAD
    int receivers, streams;
    Window windows[MAX_WINDOWS];
    uint8_t *seen;       /* [receiver * streams + stream id] */
    uint8_t *heard;      /* [receiver]: heard a packet without a probe */
    unsigned long long unknown, srtp_errors;
} Counts;

static void window_free(Window *w) {
    PyMem_Free(w->pairs);
    PyMem_Free(w->hist);
    PyMem_Free(w->hist_user);
    memset(w, 0, sizeof(*w));
}

static void Counts_dealloc(Counts *c) {
    for (int i = 0; i < MAX_WINDOWS; i++)
        window_free(&c->windows[i]);
    PyMem_Free(c->seen);
    PyMem_Free(c->heard);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static int Counts_init(Counts *c, PyObject *args, PyObject *kw) {
    static char *names[] = {"receivers", "streams", NULL};
    int receivers, streams;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "ii:Counts", names, &receivers, &streams))
        return -1;
    if (receivers < 1 || receivers > MAX_RECEIVERS || streams < 1 || streams > MAX_STREAMS) {
        PyErr_Format(PyExc_ValueError, "receivers must be 1..%d and streams 1..%d",
                     MAX_RECEIVERS, MAX_STREAMS);
        return -1;
    }
    if (c->seen != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Counts is already initialised");
        return -1;
    }
    c->receivers = receivers;
    c->streams = streams;
    c->seen = PyMem_Calloc((size_t)receivers * (size_t)streams, 1);
    c->heard = PyMem_Calloc((size_t)receivers, 1);
    if (c->seen == NULL || c->heard == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Count one plaintext RTP packet of ``receiver`` that reached its socket at ``arrived``
 * (monotonic ns). The hot path: no allocation, no Python object. */
static void count(Counts *c, int receiver, const uint8_t *p, Py_ssize_t n, int64_t arrived) {
    const int64_t now = clock_ns(CLOCK_MONOTONIC);
    const uint8_t *probe = NULL;
    const Py_ssize_t limit = n < PROBE_LIMIT ? n : PROBE_LIMIT;
    if (limit > 12 + 3)
        probe = memmem(p + 12, (size_t)(limit - 12), MAGIC, sizeof(MAGIC));
    uint32_t sid = 0;
    if (probe != NULL && probe - p + PROBE_SIZE <= n)
        sid = be32(probe + 4);
    if (probe == NULL || probe - p + PROBE_SIZE > n || receiver < 0 || receiver >= c->receivers ||
        sid >= (uint32_t)c->streams) {
        c->unknown++;
        if (receiver >= 0 && receiver < c->receivers)
            c->heard[receiver] = 1; /* "heard something" (re-encoded media has no probe) */
        for (int i = 0; i < MAX_WINDOWS; i++) {
            Window *w = &c->windows[i];
            if (w->open && w->start <= arrived && arrived < w->end)
                w->unprobed++;
        }
        return;
    }
    const int64_t sent = (int64_t)(((uint64_t)be32(probe + 12) << 32) | be32(probe + 16));
    const size_t pair = (size_t)receiver * (size_t)c->streams + sid;
    c->seen[pair] = 1;
    for (int i = 0; i < MAX_WINDOWS; i++) {
        Window *w = &c->windows[i];
        if (w->open && w->start <= sent && sent < w->end) {
            w->pairs[pair]++;
            w->hist[bucket(arrived - sent)]++;
            w->hist_user[bucket(now - sent)]++;
            return;
        }
    }
}

PyDoc_STRVAR(Counts_open_doc,
"open(id, start, end)\n\n"
"Start counting packets sent in [start, end) (CLOCK_MONOTONIC ns) under ``id``.\n"
"Raises ValueError if ``id`` is open already or all windows are in use.");

static PyObject *Counts_open(Counts *c, PyObject *args) {
    long long id, start, end;
    if (!PyArg_ParseTuple(args, "LLL:open", &id, &start, &end))
        return NULL;
    Window *free_slot = NULL;
    for (int i = 0; i < MAX_WINDOWS; i++) {
        Window *w = &c->windows[i];
        if (w->open && w->id == id) {
            PyErr_Format(PyExc_ValueError, "window %lld is open already", id);
            return NULL;
        }
        if (!w->open && free_slot == NULL)
            free_slot = w;
    }
    if (free_slot == NULL) {
        PyErr_Format(PyExc_ValueError, "more than %d windows open", MAX_WINDOWS);
        return NULL;
    }
    Window *w = free_slot;
    w->pairs = PyMem_Calloc((size_t)c->receivers * (size_t)c->streams, sizeof(uint32_t));
    w->hist = PyMem_Calloc(HIST_SIZE, sizeof(uint32_t));
    w->hist_user = PyMem_Calloc(HIST_SIZE, sizeof(uint32_t));
    if (w->pairs == NULL || w->hist == NULL || w->hist_user == NULL) {
        window_free(w);
        return PyErr_NoMemory();
    }
    w->id = id;
    w->start = start;
    w->end = end;
    w->unprobed = 0;
    w->open = 1;
    Py_RETURN_NONE;
}

/* {key: count} for the non-zero cells of ``cells`` (a sparse JSON-friendly form). The key
 * is the cell's index, or with ``streams`` > 0 (cells [receiver * streams + stream id])
 * the runner's pair key (receiver << 16) | stream id. */
static PyObject *nonzero(const uint32_t *cells, size_t size, size_t streams) {
    PyObject *d = PyDict_New();
    if (d == NULL)
        return NULL;
    for (size_t i = 0; i < size; i++) {
        if (cells[i] == 0)
            continue;
        const size_t key = streams ? (i / streams) << 16 | i % streams : i;
        PyObject *k = PyLong_FromSize_t(key), *v = PyLong_FromUnsignedLong(cells[i]);
        if (k == NULL || v == NULL || PyDict_SetItem(d, k, v) < 0) {
            Py_XDECREF(k);
            Py_XDECREF(v);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(k);
        Py_DECREF(v);
    }
    return d;
}

PyDoc_STRVAR(Counts_take_doc,
"take(id) -> dict | None\n\n"
"Close window ``id`` and return what it counted: ``pairs`` ({(receiver << 16) | stream\n"
"id: packets}), ``hist`` and ``hist_user`` ({bucket: packets}), ``unprobed``; None if\n"
"no such window is open.");

static PyObject *Counts_take(Counts *c, PyObject *arg) {
    long long id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred())
        return NULL;
    Window *w = NULL;
    for (int i = 0; i < MAX_WINDOWS; i++)
        if (c->windows[i].open && c->windows[i].id == id)
            w = &c->windows[i];
    if (w == NULL)
        Py_RETURN_NONE;
    const size_t streams = (size_t)c->streams;
    PyObject *out = Py_BuildValue("{s:N,s:N,s:N,s:K}",
                                  "pairs", nonzero(w->pairs, (size_t)c->receivers * streams,
                                                   streams),
                                  "hist", nonzero(w->hist, HIST_SIZE, 0),
                                  "hist_user", nonzero(w->hist_user, HIST_SIZE, 0),
                                  "unprobed", w->unprobed);
    if (out != NULL)
        window_free(w);
    return out;
}

PyDoc_STRVAR(Counts_seen_doc,
"seen(receiver) -> set[int]\n\n"
"The stream ids ``receiver`` has heard, and -1 if it heard a packet without a probe.");

static PyObject *Counts_seen(Counts *c, PyObject *arg) {
    long r = PyLong_AsLong(arg);
    if (r == -1 && PyErr_Occurred())
        return NULL;
    PyObject *out = PySet_New(NULL);
    if (out == NULL || r < 0 || r >= c->receivers)
        return out;
    for (int s = -1; s < c->streams; s++) {
        int hit = s < 0 ? c->heard[r] : c->seen[(size_t)r * (size_t)c->streams + (size_t)s];
        if (!hit)
            continue;
        PyObject *v = PyLong_FromLong(s);
        if (v == NULL || PySet_Add(out, v) < 0) {
            Py_XDECREF(v);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(v);
    }
    return out;
}

PyDoc_STRVAR(Counts_record_doc,
"record(receiver, packet, arrived)\n\n"
"Count one plaintext RTP packet that reached ``receiver``'s socket at ``arrived``\n"
"(CLOCK_MONOTONIC ns): what an Endpoint does after unprotecting and stamping.");

static PyObject *Counts_record(Counts *c, PyObject *args) {
    int receiver;
    Py_buffer packet;
    long long arrived;
    if (!PyArg_ParseTuple(args, "iy*L:record", &receiver, &packet, &arrived))
        return NULL;
    count(c, receiver, packet.buf, packet.len, arrived);
    PyBuffer_Release(&packet);
    Py_RETURN_NONE;
}

static PyObject *Counts_get_unknown(Counts *c, void *closure) {
    return PyLong_FromUnsignedLongLong(c->unknown);
}

static PyObject *Counts_get_srtp_errors(Counts *c, void *closure) {
    return PyLong_FromUnsignedLongLong(c->srtp_errors);
}

static PyMethodDef Counts_methods[] = {
    {"open", (PyCFunction)Counts_open, METH_VARARGS, Counts_open_doc},
    {"take", (PyCFunction)Counts_take, METH_O, Counts_take_doc},
    {"seen", (PyCFunction)Counts_seen, METH_O, Counts_seen_doc},
    {"record", (PyCFunction)Counts_record, METH_VARARGS, Counts_record_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Counts_getset[] = {
    {"unknown", (getter)Counts_get_unknown, NULL, "packets without a probe", NULL},
    {"srtp_errors", (getter)Counts_get_srtp_errors, NULL,
     "RTP packets libsrtp refused (or longer than the buffer)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CountsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bench._receive.Counts",
    .tp_doc = PyDoc_STR("Counts(receivers, streams): what the generator's receivers heard, "
                        "per window."),
    .tp_basicsize = sizeof(Counts),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Counts_init,
    .tp_dealloc = (destructor)Counts_dealloc,
    .tp_methods = Counts_methods,
    .tp_getset = Counts_getset,
};

/* --- Endpoint: ``datagram_received`` of one receiving socket ------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Counts *counts;
    int receiver;
    int fd;              /* our dup() of the socket, for its receive stamps */
    srtp_unprotect_fn unprotect; /* NULL: plaintext (the bare reflector) */
    void *ctx;
    PyObject *session;   /* the pylibsrtp Session: it frees ctx when it is collected */
    PyObject *other;     /* called (data, addr) for STUN, DTLS and RTCP; or None */
} Endpoint;

static void endpoint_close(Endpoint *e) {
    if (e->fd >= 0) {
        close(e->fd);
        e->fd = -1;
    }
}

static void Endpoint_dealloc(Endpoint *e) {
    PyObject_GC_UnTrack(e);
    endpoint_close(e);
    Py_CLEAR(e->counts);
    Py_CLEAR(e->session);
    Py_CLEAR(e->other);
    Py_TYPE(e)->tp_free((PyObject *)e);
}

static int Endpoint_traverse(Endpoint *e, visitproc visit, void *arg) {
    Py_VISIT(e->counts);
    Py_VISIT(e->session);
    Py_VISIT(e->other);
    return 0;
}

static int Endpoint_clear(Endpoint *e) {
    Py_CLEAR(e->counts);
    Py_CLEAR(e->session);
    Py_CLEAR(e->other);
    return 0;
}

/* The arrival time of the datagram just read from ``fd``, in monotonic ns; "now" when the
 * kernel did not stamp it (the pessimistic answer). */
static int64_t arrival(int fd) {
    const int64_t now = clock_ns(CLOCK_MONOTONIC);
    struct timespec ts;
    if (fd < 0 || ioctl(fd, SIOCGSTAMPNS, &ts) < 0)
        return now;
    const int64_t age = clock_ns(CLOCK_REALTIME) - ((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec);
    return age > 0 ? now - age : now;
}

static PyObject *Endpoint_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf,
                                     PyObject *kwnames) {
    Endpoint *e = (Endpoint *)self;
    const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "datagram_received(data, addr)");
        return NULL;
    }
    PyObject *data = args[0];
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "data must be bytes");
        return NULL;
    }
    const uint8_t *d = (const uint8_t *)PyBytes_AS_STRING(data);
    const Py_ssize_t n = PyBytes_GET_SIZE(data);
    /* RFC 7983 section 7 (RTP/RTCP: 128..191) and RFC 5761 section 4 (RTCP: 192..223) */
    const int rtp = n >= 12 && d[0] > 127 && d[0] < 192 && !(d[1] > 191 && d[1] < 224);
    if (!rtp) {
        if (e->other == NULL || e->other == Py_None)
            Py_RETURN_NONE;
        return PyObject_Vectorcall(e->other, args, 2, NULL);
    }
    const int64_t arrived = arrival(e->fd);
    if (e->unprotect == NULL) {
        count(e->counts, e->receiver, d, n, arrived);
        Py_RETURN_NONE;
    }
    uint8_t buf[BUFFER];
    int len = (int)n;
    if (n > BUFFER) {
        e->counts->srtp_errors++;
        Py_RETURN_NONE;
    }
    memcpy(buf, d, (size_t)n);
    if (e->unprotect(e->ctx, buf, &len) != 0) { /* srtp_err_status_ok is 0 */
        e->counts->srtp_errors++;
        Py_RETURN_NONE;
    }
    count(e->counts, e->receiver, buf, len, arrived);
    Py_RETURN_NONE;
}

static PyObject *Endpoint_new(PyTypeObject *type, PyObject *args, PyObject *kw) {
    static char *names[] = {"counts", "receiver", "fileno", "other", "unprotect", "ctx",
                            "session", NULL};
    PyObject *counts, *other, *session = Py_None;
    int receiver, fileno;
    unsigned long long unprotect = 0, ctx = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!iiO|KKO:Endpoint", names, &CountsType,
                                     &counts, &receiver, &fileno, &other, &unprotect, &ctx,
                                     &session))
        return NULL;
    if (((Counts *)counts)->seen == NULL) {
        PyErr_SetString(PyExc_ValueError, "counts is not initialised");
        return NULL;
    }
    if (receiver < 0 || receiver >= ((Counts *)counts)->receivers) {
        PyErr_SetString(PyExc_ValueError, "receiver out of range");
        return NULL;
    }
    if ((unprotect == 0) != (ctx == 0) || (ctx != 0 && session == Py_None)) {
        PyErr_SetString(PyExc_ValueError, "unprotect, ctx and session go together");
        return NULL;
    }
    if (other != Py_None && !PyCallable_Check(other)) {
        PyErr_SetString(PyExc_TypeError, "other must be callable or None");
        return NULL;
    }
    int fd = dup(fileno);
    if (fd < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    /* The first SIOCGSTAMPNS turns receive stamps on for the socket (and answers ENOENT:
     * nothing stamped yet). */
    struct timespec ts;
    if (ioctl(fd, SIOCGSTAMPNS, &ts) < 0 && errno != ENOENT) {
        PyErr_SetFromErrno(PyExc_OSError);
        close(fd);
        return NULL;
    }
    Endpoint *e = (Endpoint *)type->tp_alloc(type, 0);
    if (e == NULL) {
        close(fd);
        return NULL;
    }
    e->vectorcall = Endpoint_vectorcall;
    e->counts = (Counts *)Py_NewRef(counts);
    e->receiver = receiver;
    e->fd = fd;
    e->unprotect = (srtp_unprotect_fn)(uintptr_t)unprotect;
    e->ctx = (void *)(uintptr_t)ctx;
    e->session = Py_NewRef(session);
    e->other = Py_NewRef(other);
    return (PyObject *)e;
}

static PyObject *Endpoint_close(Endpoint *e, PyObject *unused) {
    endpoint_close(e);
    Py_RETURN_NONE;
}

static PyMethodDef Endpoint_methods[] = {
    {"close", (PyCFunction)Endpoint_close, METH_NOARGS,
     "Close the duplicated socket (later datagrams read as arriving now)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject EndpointType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "bench._receive.Endpoint",
    .tp_doc = PyDoc_STR(
        "Endpoint(counts, receiver, fileno, other, unprotect=0, ctx=0, session=None)\n\n"
        "A ``datagram_received(data, addr)`` for one receiving socket: RTP is unprotected\n"
        "(with libsrtp's srtp_unprotect at ``unprotect`` on the srtp_t at ``ctx``, kept\n"
        "alive by ``session``; plaintext when both are 0), stamped with the kernel's\n"
        "receive time and counted in ``counts`` for ``receiver``; anything else goes to\n"
        "``other``. ``fileno`` is duplicated."),
    .tp_basicsize = sizeof(Endpoint),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = Endpoint_new,
    .tp_dealloc = (destructor)Endpoint_dealloc,
    .tp_traverse = (traverseproc)Endpoint_traverse,
    .tp_clear = (inquiry)Endpoint_clear,
    .tp_vectorcall_offset = offsetof(Endpoint, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_methods = Endpoint_methods,
};

static struct PyModuleDef receive_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "bench._receive",
    .m_doc = "The load generator's receive path in C (see the comment at the top of "
             "bench/_receive.c).",
    .m_size = -1,
};

PyMODINIT_FUNC PyInit__receive(void) {
    if (PyType_Ready(&CountsType) < 0 || PyType_Ready(&EndpointType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&receive_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Counts", (PyObject *)&CountsType) < 0 ||
        PyModule_AddObjectRef(m, "Endpoint", (PyObject *)&EndpointType) < 0 ||
        PyModule_AddIntConstant(m, "HIST_FINE", HIST_FINE) < 0 ||
        PyModule_AddIntConstant(m, "HIST_SIZE", HIST_SIZE) < 0 ||
        PyModule_AddIntConstant(m, "BUFFER", BUFFER) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
