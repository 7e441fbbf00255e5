#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <string.h>

/* encryptsvc's per-field sealing: AES-256-GCM under one content key through one reused OpenSSL
   EVP context, and the field's compact JWE written in one pass (services/encryptsvc/envelope.py,
   JweSealer.seal, holds the same steps in Python and is the specification; docs/format.md the
   format). Python keeps everything that decides: the key, the IVs (drawn from the OS), the
   headers. This module only encrypts and encodes. Every output length is computed before
   writing and checked after. */

static const char B64URL[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static Py_ssize_t b64url_len(Py_ssize_t n) { return (4 * n + 2) / 3; }

/* The result is an ASCII str (PyUnicode_New(..., 127)): bytes copied into it as they are must
   be ASCII too, or the str object would be malformed. */
static int is_ascii(const unsigned char *p, Py_ssize_t n) {
    unsigned char any = 0;
    for (Py_ssize_t i = 0; i < n; i++) any |= p[i];
    return any < 128;
}

static char *b64url(char *out, const unsigned char *in, Py_ssize_t n) {
    Py_ssize_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (in[i] << 16) | (in[i + 1] << 8) | in[i + 2];
        *out++ = B64URL[(v >> 18) & 63]; *out++ = B64URL[(v >> 12) & 63];
        *out++ = B64URL[(v >> 6) & 63]; *out++ = B64URL[v & 63];
    }
    if (n - i == 1) {
        unsigned v = in[i] << 16;
        *out++ = B64URL[(v >> 18) & 63]; *out++ = B64URL[(v >> 12) & 63];
    } else if (n - i == 2) {
        unsigned v = (in[i] << 16) | (in[i + 1] << 8);
        *out++ = B64URL[(v >> 18) & 63]; *out++ = B64URL[(v >> 12) & 63];
        *out++ = B64URL[(v >> 6) & 63];
    }
    return out;
}

typedef struct {
    PyObject_HEAD
    EVP_CIPHER_CTX *ctx;
    /* The header head and middle last checked to be ASCII (held, so that their identity means
       their content): the same two objects come with every field of a content key. */
    PyObject *ascii_head;
    PyObject *ascii_middle;
} Sealer;

static void Sealer_dealloc(Sealer *self) {
    if (self->ctx) EVP_CIPHER_CTX_free(self->ctx);
    Py_XDECREF(self->ascii_head);
    Py_XDECREF(self->ascii_middle);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Sealer_init(Sealer *self, PyObject *args, PyObject *kw) {
    Py_buffer key;
    if (self->ctx != NULL) { PyErr_SetString(PyExc_RuntimeError, "a Sealer's key is set once"); return -1; }
    if (!PyArg_ParseTuple(args, "y*", &key)) return -1;
    if (key.len != 32) { PyBuffer_Release(&key); PyErr_SetString(PyExc_ValueError, "key must be 32 bytes"); return -1; }
    self->ctx = EVP_CIPHER_CTX_new();
    int ok = self->ctx && EVP_EncryptInit_ex(self->ctx, EVP_aes_256_gcm(), NULL, NULL, NULL)
        && EVP_CIPHER_CTX_ctrl(self->ctx, EVP_CTRL_GCM_SET_IVLEN, 12, NULL)
        && EVP_EncryptInit_ex(self->ctx, NULL, NULL, key.buf, NULL);
    PyBuffer_Release(&key);
    if (!ok) { PyErr_SetString(PyExc_RuntimeError, "AES-256-GCM setup failed"); return -1; }
    return 0;
}

/* seal(protected_head, header_rest, middle, iv, plaintext) -> str
   protected = protected_head + b64url(header_rest); result = protected + middle + b64url(iv)
   + "." + b64url(ct) + "." + b64url(tag); protected (ASCII) is the GCM additional data. */
static PyObject *Sealer_seal(Sealer *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 5) { PyErr_SetString(PyExc_TypeError, "seal takes 5 arguments"); return NULL; }
    if (self->ctx == NULL) { PyErr_SetString(PyExc_RuntimeError, "Sealer was not given a key"); return NULL; }
    Py_buffer head, rest, middle, iv, pt;
    if (PyObject_GetBuffer(args[0], &head, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &rest, PyBUF_SIMPLE) < 0) { PyBuffer_Release(&head); return NULL; }
    if (PyObject_GetBuffer(args[2], &middle, PyBUF_SIMPLE) < 0) { PyBuffer_Release(&head); PyBuffer_Release(&rest); return NULL; }
    if (PyObject_GetBuffer(args[3], &iv, PyBUF_SIMPLE) < 0) { PyBuffer_Release(&head); PyBuffer_Release(&rest); PyBuffer_Release(&middle); return NULL; }
    if (PyObject_GetBuffer(args[4], &pt, PyBUF_SIMPLE) < 0) { PyBuffer_Release(&head); PyBuffer_Release(&rest); PyBuffer_Release(&middle); PyBuffer_Release(&iv); return NULL; }
    PyObject *result = NULL;
    unsigned char *ct = NULL;
    if (iv.len != 12) { PyErr_SetString(PyExc_ValueError, "the IV must be 12 bytes"); goto done; }
    if (args[0] != self->ascii_head || args[2] != self->ascii_middle) {
        /* Only immutable bytes may be remembered: a bytearray could change after the check. */
        if (!is_ascii(head.buf, head.len) || !is_ascii(middle.buf, middle.len)) {
            PyErr_SetString(PyExc_ValueError, "the header's encoded part and the middle must be ASCII");
            goto done;
        }
        if (PyBytes_CheckExact(args[0]) && PyBytes_CheckExact(args[2])) {
            Py_XSETREF(self->ascii_head, Py_NewRef(args[0]));
            Py_XSETREF(self->ascii_middle, Py_NewRef(args[2]));
        }
    }
    Py_ssize_t prot_len = head.len + b64url_len(rest.len);
    /* EVP takes int lengths; encryptsvc's events are at most a few MB. */
    if (pt.len > INT_MAX / 2 || prot_len > INT_MAX / 2 || middle.len > INT_MAX / 2) {
        PyErr_SetString(PyExc_ValueError, "value or header too long"); goto done;
    }
    Py_ssize_t total = prot_len + middle.len + 16 + 1 + b64url_len(pt.len) + 1 + 22;
    result = PyUnicode_New(total, 127);
    if (!result) goto done;
    char *out = (char *)PyUnicode_DATA(result);
    char *p = out;
    memcpy(p, head.buf, head.len); p += head.len;
    p = b64url(p, rest.buf, rest.len);
    ct = PyMem_Malloc(pt.len > 0 ? pt.len : 1);
    if (!ct) { Py_CLEAR(result); PyErr_NoMemory(); goto done; }
    int len = 0, fin = 0;
    unsigned char tag[16];
    if (!EVP_EncryptInit_ex(self->ctx, NULL, NULL, NULL, iv.buf)
        || !EVP_EncryptUpdate(self->ctx, NULL, &len, (unsigned char *)out, (int)prot_len)
        || !EVP_EncryptUpdate(self->ctx, ct, &len, pt.buf, (int)pt.len)
        || !EVP_EncryptFinal_ex(self->ctx, ct + len, &fin)
        || !EVP_CIPHER_CTX_ctrl(self->ctx, EVP_CTRL_GCM_GET_TAG, 16, tag)
        || len + fin != pt.len) {
        Py_CLEAR(result); PyErr_SetString(PyExc_RuntimeError, "AES-256-GCM encryption failed"); goto done;
    }
    memcpy(p, middle.buf, middle.len); p += middle.len;
    p = b64url(p, iv.buf, 12); *p++ = '.';
    p = b64url(p, ct, pt.len); *p++ = '.';
    p = b64url(p, tag, 16);
    if (p - out != total) { Py_CLEAR(result); PyErr_SetString(PyExc_RuntimeError, "length mismatch"); goto done; }
done:
    if (ct) PyMem_Free(ct);
    PyBuffer_Release(&head); PyBuffer_Release(&rest); PyBuffer_Release(&middle); PyBuffer_Release(&iv); PyBuffer_Release(&pt);
    return result;
}

static PyMethodDef Sealer_methods[] = {
    {"seal", (PyCFunction)(void (*)(void))Sealer_seal, METH_FASTCALL, "seal one field"},
    {NULL}
};

static PyTypeObject SealerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "_fastseal.Sealer",
    .tp_basicsize = sizeof(Sealer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sealer_init,
    .tp_dealloc = (destructor)Sealer_dealloc,
    .tp_methods = Sealer_methods,
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_fastseal", NULL, -1, NULL};

PyMODINIT_FUNC PyInit__fastseal(void) {
    if (PyType_Ready(&SealerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&mod);
    if (!m) return NULL;
    Py_INCREF(&SealerType);
    PyModule_AddObject(m, "Sealer", (PyObject *)&SealerType);
    return m;
}
