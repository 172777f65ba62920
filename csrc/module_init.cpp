// Python module entry point for an ilsgan extension. The kernels register themselves with the
// torch dispatcher (TORCH_LIBRARY_FRAGMENT in each source file) when the shared library loads;
// this file only gives Python something to import, without pulling in the slow torch headers.
#include <Python.h>

#define ILSGAN_CONCAT_(a, b) a##b
#define ILSGAN_CONCAT(a, b) ILSGAN_CONCAT_(a, b)
#define ILSGAN_STR_(a) #a
#define ILSGAN_STR(a) ILSGAN_STR_(a)

static struct PyModuleDef ilsgan_module = {
    PyModuleDef_HEAD_INIT, ILSGAN_STR(ILSGAN_EXT_NAME),
    "ilsgan kernels; the ops live in torch.ops (ilsgan_cpu / ilsgan_cuda)", -1, nullptr,
};

PyMODINIT_FUNC ILSGAN_CONCAT(PyInit_, ILSGAN_EXT_NAME)(void) { return PyModule_Create(&ilsgan_module); }
