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

/* Remembers that head and middle are ASCII, or raises ValueError (-1). Only immutable bytes are
   remembered (by identity): a bytearray could change after the check. */
static int check_ascii(Sealer *self, PyObject *head_obj, const Py_buffer *head,
                       PyObject *middle_obj, const Py_buffer *middle) {
    if (head_obj == self->ascii_head && middle_obj == self->ascii_middle) return 0;
    if (!is_ascii(head->buf, head->len) || !is_ascii(middle->buf, middle->len)) {
        PyErr_SetString(PyExc_ValueError, "the header's encoded part and the middle must be ASCII");
        return -1;
    }
    if (PyBytes_CheckExact(head_obj) && PyBytes_CheckExact(middle_obj)) {
        Py_XSETREF(self->ascii_head, Py_NewRef(head_obj));
        Py_XSETREF(self->ascii_middle, Py_NewRef(middle_obj));
    }
    return 0;
}

/* One field: protected = head + b64url(rest1 + rest2); the result is protected + middle +
   b64url(iv) + "." + b64url(ct) + "." + b64url(tag), protected (ASCII) the GCM additional data.
   rest1 and rest2 are two pieces of the header's un-encoded rest (the event's part and the
   path's), encoded as one. A new str, or NULL with an exception set. */
static PyObject *seal_one(Sealer *self, const Py_buffer *head, const char *rest1, Py_ssize_t len1,
                          const char *rest2, Py_ssize_t len2, const Py_buffer *middle,
                          const unsigned char *iv, const unsigned char *pt, Py_ssize_t pt_len) {
    Py_ssize_t rest_len = len1 + len2;
    Py_ssize_t prot_len = head->len + b64url_len(rest_len);
    /* EVP takes int lengths; encryptsvc's events are at most a few MB. */
    if (pt_len > INT_MAX / 2 || prot_len > INT_MAX / 2 || middle->len > INT_MAX / 2) {
        PyErr_SetString(PyExc_ValueError, "value or header too long");
        return NULL;
    }
    Py_ssize_t total = prot_len + middle->len + 16 + 1 + b64url_len(pt_len) + 1 + 22;
    PyObject *result = PyUnicode_New(total, 127);
    if (!result) return NULL;
    char *out = (char *)PyUnicode_DATA(result);
    char *p = out;
    memcpy(p, head->buf, head->len); p += head->len;
    /* The two pieces of the rest are encoded as one: joined first (on the stack when short). */
    unsigned char small[512];
    unsigned char *rest = rest_len <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc(rest_len);
    unsigned char *ct = PyMem_Malloc(pt_len > 0 ? pt_len : 1);
    if (!rest || !ct) {
        if (rest && rest != small) PyMem_Free(rest);
        if (ct) PyMem_Free(ct);
        Py_DECREF(result);
        return PyErr_NoMemory();
    }
    memcpy(rest, rest1, len1);
    memcpy(rest + len1, rest2, len2);
    p = b64url(p, rest, rest_len);
    if (rest != small) PyMem_Free(rest);
    int len = 0, fin = 0;
    unsigned char tag[16];
    if (!EVP_EncryptInit_ex(self->ctx, NULL, NULL, NULL, iv)
        || !EVP_EncryptUpdate(self->ctx, NULL, &len, (unsigned char *)out, (int)prot_len)
        || !EVP_EncryptUpdate(self->ctx, ct, &len, pt, (int)pt_len)
        || !EVP_EncryptFinal_ex(self->ctx, ct + len, &fin)
        || !EVP_CIPHER_CTX_ctrl(self->ctx, EVP_CTRL_GCM_GET_TAG, 16, tag)
        || len + fin != pt_len) {
        PyMem_Free(ct);
        Py_DECREF(result);
        PyErr_SetString(PyExc_RuntimeError, "AES-256-GCM encryption failed");
        return NULL;
    }
    memcpy(p, middle->buf, middle->len); p += middle->len;
    p = b64url(p, iv, 12); *p++ = '.';
    p = b64url(p, ct, pt_len); *p++ = '.';
    p = b64url(p, tag, 16);
    PyMem_Free(ct);
    if (p - out != total) {
        Py_DECREF(result);
        PyErr_SetString(PyExc_RuntimeError, "length mismatch");
        return NULL;
    }
    return result;
}

/* seal(protected_head, header_rest, middle, iv, plaintext) -> str: one field (seal_one). */
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
    if (iv.len != 12) { PyErr_SetString(PyExc_ValueError, "the IV must be 12 bytes"); goto done; }
    if (check_ascii(self, args[0], &head, args[2], &middle) < 0) goto done;
    result = seal_one(self, &head, rest.buf, rest.len, "", 0, &middle, iv.buf, pt.buf, pt.len);
done:
    PyBuffer_Release(&head); PyBuffer_Release(&rest); PyBuffer_Release(&middle); PyBuffer_Release(&iv); PyBuffer_Release(&pt);
    return result;
}

/* One field of seal_into: sealed and stored in place[0][place[1]]; 0, or -1 with an exception. */
static int seal_place(Sealer *self, const Py_buffer *head, const Py_buffer *event_head,
                      const Py_buffer *middle, const unsigned char *iv, PyObject *place,
                      PyObject *pt_obj, PyObject *closings, PyObject *closing) {
    PyObject *path = PyTuple_GET_ITEM(place, 2);
    PyObject *end = PyDict_GetItemWithError(closings, path); /* borrowed */
    if (end != NULL) {
        Py_INCREF(end);
    } else {
        if (PyErr_Occurred()) return -1;
        end = PyObject_CallOneArg(closing, path);
        if (end == NULL) return -1;
    }
    if (!PyBytes_CheckExact(end)) {
        Py_DECREF(end);
        PyErr_SetString(PyExc_TypeError, "a path's closing must be bytes");
        return -1;
    }
    PyObject *sealed = seal_one(self, head, event_head->buf, event_head->len,
                                PyBytes_AS_STRING(end), PyBytes_GET_SIZE(end), middle, iv,
                                (const unsigned char *)PyBytes_AS_STRING(pt_obj),
                                PyBytes_GET_SIZE(pt_obj));
    Py_DECREF(end);
    if (sealed == NULL) return -1;
    int stored = PyObject_SetItem(PyTuple_GET_ITEM(place, 0), PyTuple_GET_ITEM(place, 1), sealed);
    Py_DECREF(sealed);
    return stored;
}

/* seal_into(protected_head, event_head, middle, ivs, plaintexts, located, closings, closing)
   -> None: the fields of one event, each written into its place. Field i is what seal writes
   for (protected_head, event_head + its path's closing, middle, ivs[12i:12i+12],
   plaintexts[i]), stored as located[i][0][located[i][1]]. A path's closing is closings[path],
   or closing(path) when absent (Python's function, which also fills closings). On an error the
   fields before it are already written (the caller drops the whole event). */
static PyObject *Sealer_seal_into(Sealer *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 8) { PyErr_SetString(PyExc_TypeError, "seal_into takes 8 arguments"); return NULL; }
    if (self->ctx == NULL) { PyErr_SetString(PyExc_RuntimeError, "Sealer was not given a key"); return NULL; }
    PyObject *plaintexts = args[4], *located = args[5], *closings = args[6], *closing = args[7];
    if (!PyList_CheckExact(plaintexts) || !PyList_CheckExact(located) || !PyDict_CheckExact(closings)) {
        PyErr_SetString(PyExc_TypeError, "plaintexts and located must be lists, closings a dict");
        return NULL;
    }
    /* Immutable bytes only: closing() is Python code, and a bytearray changed while the loop
       runs could put non-ASCII bytes into an ASCII str after the check. */
    for (int a = 0; a < 4; a++) {
        if (!PyBytes_CheckExact(args[a])) {
            PyErr_SetString(PyExc_TypeError, "protected_head, event_head, middle and ivs must be bytes");
            return NULL;
        }
    }
    Py_ssize_t n = PyList_GET_SIZE(plaintexts);
    if (PyList_GET_SIZE(located) != n) {
        PyErr_SetString(PyExc_ValueError, "plaintexts and located differ in length");
        return NULL;
    }
    Py_buffer head, event_head, middle, ivs;
    if (PyObject_GetBuffer(args[0], &head, PyBUF_SIMPLE) < 0) return NULL;
    if (PyObject_GetBuffer(args[1], &event_head, PyBUF_SIMPLE) < 0) { PyBuffer_Release(&head); return NULL; }
    if (PyObject_GetBuffer(args[2], &middle, PyBUF_SIMPLE) < 0) { PyBuffer_Release(&head); PyBuffer_Release(&event_head); return NULL; }
    if (PyObject_GetBuffer(args[3], &ivs, PyBUF_SIMPLE) < 0) { PyBuffer_Release(&head); PyBuffer_Release(&event_head); PyBuffer_Release(&middle); return NULL; }
    PyObject *ok = NULL;
    if (ivs.len != 12 * n) { PyErr_SetString(PyExc_ValueError, "ivs must be 12 bytes per field"); goto done; }
    if (check_ascii(self, args[0], &head, args[2], &middle) < 0) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* closing() is Python code: the lists are re-read and their items held each time. */
        if (PyList_GET_SIZE(located) != n || PyList_GET_SIZE(plaintexts) != n) {
            PyErr_SetString(PyExc_RuntimeError, "plaintexts or located changed while sealing");
            goto done;
        }
        PyObject *place = PyList_GET_ITEM(located, i);
        PyObject *pt_obj = PyList_GET_ITEM(plaintexts, i);
        if (!PyTuple_CheckExact(place) || PyTuple_GET_SIZE(place) != 3 || !PyBytes_CheckExact(pt_obj)) {
            PyErr_SetString(PyExc_TypeError, "located holds (container, key, path) tuples, plaintexts bytes");
            goto done;
        }
        Py_INCREF(place);
        Py_INCREF(pt_obj);
        int sealed_ok = seal_place(self, &head, &event_head, &middle,
                                   (const unsigned char *)ivs.buf + 12 * i, place, pt_obj,
                                   closings, closing);
        Py_DECREF(place);
        Py_DECREF(pt_obj);
        if (sealed_ok < 0) goto done;
    }
    ok = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&head); PyBuffer_Release(&event_head); PyBuffer_Release(&middle); PyBuffer_Release(&ivs);
    return ok;
}

static PyMethodDef Sealer_methods[] = {
    {"seal", (PyCFunction)(void (*)(void))Sealer_seal, METH_FASTCALL, "seal one field"},
    {"seal_into", (PyCFunction)(void (*)(void))Sealer_seal_into, METH_FASTCALL,
     "seal an event's fields, each into its place"},
    {NULL}
};

/* plaintexts(located, dumps) -> (plaintexts, jwe_growth, total): each located value as JSON,
   dumps(container[key]) for every (container, key, path) of located, with what the output
   budget needs: jwe_growth the sum over fields of (4 * (len(plaintext) + len(path))) // 3
   - len(plaintext) (base64url of value and path, less the value's own bytes; len(path) in
   characters), total the sum of len(plaintext). envelope.py's _python_plaintexts is the
   specification. */
static PyObject *plaintexts(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "plaintexts takes 2 arguments"); return NULL; }
    PyObject *located = args[0], *dumps = args[1];
    if (!PyList_CheckExact(located)) { PyErr_SetString(PyExc_TypeError, "located must be a list"); return NULL; }
    Py_ssize_t n = PyList_GET_SIZE(located);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    long long growth = 0, total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        /* dumps is Python-callable code: the list is re-read and its item held each time. */
        if (PyList_GET_SIZE(located) != n) {
            PyErr_SetString(PyExc_RuntimeError, "located changed while reading it");
            goto fail;
        }
        PyObject *place = PyList_GET_ITEM(located, i);
        if (!PyTuple_CheckExact(place) || PyTuple_GET_SIZE(place) != 3
            || !PyUnicode_Check(PyTuple_GET_ITEM(place, 2))) {
            PyErr_SetString(PyExc_TypeError, "located holds (container, key, path) tuples");
            goto fail;
        }
        Py_INCREF(place);
        PyObject *value = PyObject_GetItem(PyTuple_GET_ITEM(place, 0), PyTuple_GET_ITEM(place, 1));
        PyObject *plain = value == NULL ? NULL : PyObject_CallOneArg(dumps, value);
        Py_XDECREF(value);
        if (plain != NULL && !PyBytes_CheckExact(plain)) {
            Py_DECREF(plain);
            plain = NULL;
            PyErr_SetString(PyExc_TypeError, "dumps must return bytes");
        }
        if (plain == NULL) { Py_DECREF(place); goto fail; }
        long long length = PyBytes_GET_SIZE(plain);
        long long path = PyUnicode_GET_LENGTH(PyTuple_GET_ITEM(place, 2));
        Py_DECREF(place);
        growth += (4 * (length + path)) / 3 - length;
        total += length;
        PyList_SET_ITEM(out, i, plain); /* steals plain */
    }
    return Py_BuildValue("(NLL)", out, growth, total);
fail:
    Py_DECREF(out);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"plaintexts", (PyCFunction)(void (*)(void))plaintexts, METH_FASTCALL,
     "each located value as JSON, with the output budget's sums"},
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

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_fastseal", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__fastseal(void) {
    if (PyType_Ready(&SealerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&mod);
    if (!m) return NULL;
    Py_INCREF(&SealerType);
    PyModule_AddObject(m, "Sealer", (PyObject *)&SealerType);
    return m;
}
