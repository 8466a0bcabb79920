/* What every part of udpkit._fastpath uses: the interned names (one struct),
 * the clock, counter deltas, latency observation, quiet callbacks, exceptions
 * and rate-limit grants.  One copy each; the type files only call these. */

#include "fastpath.h"

FastpathNames names;

static const char *counter_names[C_COUNT] = {
    "received",       "replied",        "no_reply",
    "dropped_empty",  "dropped_oversize", "dropped_truncated",
    "dropped_denied", "dropped_rate_limited", "dropped_amplification",
    "send_errors",    "kernel_drops",
};

int
names_init(void)
{
    for (int i = 0; i < C_COUNT; i++) {
        if ((names.counter[i] = PyUnicode_InternFromString(counter_names[i])) == NULL) return -1;
    }
#define INTERN(field) \
    if ((names.field = PyUnicode_InternFromString(#field)) == NULL) return -1
    INTERN(handle_result);
    INTERN(handler_failed);
    INTERN(log_abuse);
    INTERN(enqueue);
    INTERN(send_failed);
    INTERN(receive_failed);
    INTERN(lines_read);
    INTERN(handed_back);
#undef INTERN
    return 0;
}

/* The names above, for udpkit._native to check against their Python owners
 * (Counters' fields, the callback Protocols) when it loads the extension. */
int
names_export(PyObject *module)
{
    PyObject *counters = PyTuple_New(C_COUNT);
    if (counters == NULL) return -1;
    for (int i = 0; i < C_COUNT; i++) PyTuple_SET_ITEM(counters, i, Py_NewRef(names.counter[i]));
    PyObject *callbacks = PyTuple_Pack(8, names.handle_result, names.handler_failed,
                                       names.log_abuse, names.enqueue, names.send_failed,
                                       names.receive_failed, names.lines_read, names.handed_back);
    int status = callbacks == NULL ? -1 : 0;
    if (status == 0) status = PyModule_AddObjectRef(module, "COUNTER_FIELDS", counters);
    if (status == 0) status = PyModule_AddObjectRef(module, "CALLBACKS", callbacks);
    Py_DECREF(counters);
    Py_XDECREF(callbacks);
    return status;
}

double
monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void
call_quietly(PyObject *callable, PyObject *const *args, size_t nargs)
{
    PyObject *result = PyObject_Vectorcall(callable, args, nargs, NULL);
    if (result == NULL) {
        PyErr_WriteUnraisable(callable);
    } else {
        Py_DECREF(result);
    }
}

static int
add_counter(PyObject *counters, PyObject *name, long long delta)
{
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

int
flush_counters(PyObject *counters, long long delta[C_COUNT])
{
    int status = 0;
    for (int i = 0; i < C_COUNT; i++) {
        if (delta[i] != 0 && status == 0) status = add_counter(counters, names.counter[i], delta[i]);
        delta[i] = 0;
    }
    return status;
}

void
observe_replies(PyObject *observe, long long count, double arrived)
{
    if (observe == NULL || count <= 0) return;
    PyObject *elapsed = PyFloat_FromDouble(monotonic_now() - arrived);
    if (elapsed == NULL) {
        PyErr_WriteUnraisable(observe);
        return;
    }
    for (long long i = 0; i < count; i++) call_quietly(observe, &elapsed, 1);
    Py_DECREF(elapsed);
}

PyObject *
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

long
take_grant(PyObject *take, PyObject *host, PyObject *now, PyObject *want)
{
    PyObject *args[3] = {host, now, want};
    PyObject *granted = PyObject_Vectorcall(take, args, 3, NULL);
    if (granted == NULL) return -1;
    long count = PyLong_AsLong(granted);
    Py_DECREF(granted);
    if (count == -1 && PyErr_Occurred()) return -1;
    return count < 0 ? 0 : count;
}
