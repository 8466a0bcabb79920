/* What every part of udpkit._fastpath uses: the clock and quiet callbacks. */

#include "fastpath.h"

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
