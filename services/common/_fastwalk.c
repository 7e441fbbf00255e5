#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* The hot path's walks over a parsed event, in C. services/common/selection.py (_locate) and
   services/common/hostile_json.py hold the same steps in Python and are the specification;
   tests/encryptsvc/test_selection.py and tests/common/test_fastwalk.py compare the two.

   locate(event, root) walks a compiled selection: root is selection.py's trie as tuples
   (_native_trie), each node (steps, items, order):
     steps  ((key, spelling, child, goes_on), ...)  goes_on 0: take the value whole,
                                                    1: go on into a dict, 2: into a list
     items  ((index, child, into_dict, into_list), ...)  index -1 for [*]; into_*: whether the
                                                    paths below go on into a dict / a list
     order  {key: position in steps}
   a child is a node, or an int (a path ends there). The trie is only ever built by
   selection.py, never from input; its shape is checked all the same (an error, not a crash). */

static int walk(PyObject *node, PyObject *trie, PyObject *prefix, PyObject *found);

/* found.append((container, key, path)); steals nothing. */
static int add(PyObject *found, PyObject *container, PyObject *key, PyObject *path) {
    PyObject *place = PyTuple_Pack(3, container, key, path);
    if (place == NULL) return -1;
    int rc = PyList_Append(found, place);
    Py_DECREF(place);
    return rc;
}

static int malformed(void) {
    PyErr_SetString(PyExc_ValueError, "malformed trie");
    return -1;
}

static int step(PyObject *node, PyObject *entry, PyObject *prefix, PyObject *found) {
    if (!PyTuple_Check(entry) || PyTuple_GET_SIZE(entry) != 4 || !PyUnicode_Check(PyTuple_GET_ITEM(entry, 1)))
        return malformed();
    PyObject *key = PyTuple_GET_ITEM(entry, 0);
    PyObject *value = PyDict_GetItemWithError(node, key); /* borrowed */
    if (value == NULL) return PyErr_Occurred() ? -1 : 0;
    long goes_on = PyLong_AsLong(PyTuple_GET_ITEM(entry, 3));
    if (goes_on == -1 && PyErr_Occurred()) return -1;
    PyObject *path = PyUnicode_Concat(prefix, PyTuple_GET_ITEM(entry, 1));
    if (path == NULL) return -1;
    int rc;
    if ((goes_on == 1 && PyDict_Check(value)) || (goes_on == 2 && PyList_Check(value))) {
        rc = walk(value, PyTuple_GET_ITEM(entry, 2), path, found);
    } else {
        rc = add(found, node, key, path);
    }
    Py_DECREF(path);
    return rc;
}

static int walk_dict(PyObject *node, PyObject *trie, PyObject *prefix, PyObject *found) {
    PyObject *steps = PyTuple_GET_ITEM(trie, 0);
    Py_ssize_t n_steps = PyTuple_GET_SIZE(steps);
    if (PyDict_GET_SIZE(node) >= n_steps) {
        for (Py_ssize_t i = 0; i < n_steps; i++) {
            if (step(node, PyTuple_GET_ITEM(steps, i), prefix, found) < 0) return -1;
        }
        return 0;
    }
    /* Fewer keys than the trie has: look the event's keys up instead (a wide trie over many
       small objects would cost its width per object), visited in the trie's order. */
    PyObject *order = PyTuple_GET_ITEM(trie, 2);
    Py_ssize_t small[64];
    Py_ssize_t *at = n_steps <= 64 ? small : PyMem_Malloc(n_steps * sizeof(Py_ssize_t));
    if (at == NULL) { PyErr_NoMemory(); return -1; }
    Py_ssize_t count = 0, pos = 0;
    PyObject *key, *ignored;
    int rc = 0;
    while (PyDict_Next(node, &pos, &key, &ignored)) {
        PyObject *where = PyDict_GetItemWithError(order, key);
        if (where == NULL) {
            if (PyErr_Occurred()) { rc = -1; goto done; }
            continue;
        }
        Py_ssize_t i = PyLong_AsSsize_t(where);
        if (i < 0 || i >= n_steps || count >= n_steps) {
            rc = PyErr_Occurred() ? -1 : malformed();
            goto done;
        }
        Py_ssize_t j = count++;
        while (j > 0 && at[j - 1] > i) { at[j] = at[j - 1]; j--; }
        at[j] = i;
    }
    for (Py_ssize_t k = 0; k < count; k++) {
        if (step(node, PyTuple_GET_ITEM(steps, at[k]), prefix, found) < 0) { rc = -1; goto done; }
    }
done:
    if (at != small) PyMem_Free(at);
    return rc;
}

static int walk_list(PyObject *node, PyObject *trie, PyObject *prefix, PyObject *found) {
    PyObject *items = PyTuple_GET_ITEM(trie, 1);
    for (Py_ssize_t s = 0; s < PyTuple_GET_SIZE(items); s++) {
        PyObject *item = PyTuple_GET_ITEM(items, s);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 4) return malformed();
        Py_ssize_t index = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 0));
        if (index == -1 && PyErr_Occurred()) return -1;
        PyObject *child = PyTuple_GET_ITEM(item, 1);
        int into_dict = PyObject_IsTrue(PyTuple_GET_ITEM(item, 2));
        int into_list = PyObject_IsTrue(PyTuple_GET_ITEM(item, 3));
        /* [*]: every element; an index: that one, when the list is long enough. */
        Py_ssize_t first = index < 0 ? 0 : index;
        for (Py_ssize_t i = first; i < PyList_GET_SIZE(node) && (index < 0 || i == index); i++) {
            PyObject *value = PyList_GET_ITEM(node, i);
            PyObject *path = PyUnicode_FromFormat("%U[%zd]", prefix, i);
            if (path == NULL) return -1;
            int rc;
            if ((into_dict && PyDict_Check(value)) || (into_list && PyList_Check(value))) {
                Py_INCREF(value); /* the walk below runs no Python code, but holds it anyway */
                rc = walk(value, child, path, found);
                Py_DECREF(value);
            } else {
                PyObject *index_obj = PyLong_FromSsize_t(i);
                rc = index_obj == NULL ? -1 : add(found, node, index_obj, path);
                Py_XDECREF(index_obj);
            }
            Py_DECREF(path);
            if (rc < 0) return -1;
        }
    }
    return 0;
}

static int walk(PyObject *node, PyObject *trie, PyObject *prefix, PyObject *found) {
    if (!PyTuple_Check(trie) || PyTuple_GET_SIZE(trie) != 3 || !PyTuple_Check(PyTuple_GET_ITEM(trie, 0))
        || !PyTuple_Check(PyTuple_GET_ITEM(trie, 1)) || !PyDict_Check(PyTuple_GET_ITEM(trie, 2)))
        return malformed();
    if (Py_EnterRecursiveCall(" in locate")) return -1;
    int rc = 0;
    if (PyDict_Check(node)) rc = walk_dict(node, trie, prefix, found);
    else if (PyList_Check(node)) rc = walk_list(node, trie, prefix, found);
    Py_LeaveRecursiveCall();
    return rc;
}

static PyObject *locate(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "locate takes 2 arguments"); return NULL; }
    PyObject *found = PyList_New(0);
    if (found == NULL) return NULL;
    PyObject *empty = PyUnicode_New(0, 0);
    if (empty == NULL || walk(args[0], args[1], empty, found) < 0) {
        Py_XDECREF(empty);
        Py_DECREF(found);
        return NULL;
    }
    Py_DECREF(empty);
    return found;
}

/* brackets(raw) -> the number of "{" and "[" bytes: hostile_json's upper bound of the nesting
   depth, in one pass the compiler vectorises (bytes.count is one byte at a time, twice). */
static PyObject *brackets(PyObject *module, PyObject *arg) {
    Py_buffer raw;
    if (PyObject_GetBuffer(arg, &raw, PyBUF_SIMPLE) < 0) return NULL;
    const unsigned char *p = raw.buf;
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < raw.len; i++) count += (p[i] == '{') | (p[i] == '[');
    PyBuffer_Release(&raw);
    return PyLong_FromSsize_t(count);
}

static PyMethodDef methods[] = {
    {"locate", (PyCFunction)(void (*)(void))locate, METH_FASTCALL,
     "every place a compiled selection names in a parsed event"},
    {"brackets", brackets, METH_O, "the number of { and [ bytes"},
    {NULL}
};

static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_fastwalk", NULL, -1, methods};

PyMODINIT_FUNC PyInit__fastwalk(void) { return PyModule_Create(&mod); }
