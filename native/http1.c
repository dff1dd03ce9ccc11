/* rhone_local._http1: the edge's HTTP/1.1 parsers, llhttp (native/llhttp) driven from C.
 *
 * The same contract as rhone_local/http1.py, which implements it on httptools and is used when this module was not
 * built (see docs/architecture.md, "The edge's parsers"). What differs from httptools is the shape of the callbacks:
 * a message's whole head reaches Python in one call, `on_head(first, headers)`, instead of one call per URL piece
 * and per header, because on the edge's hot path each Python call costs more than the parsing itself.
 *
 *   RequestParser(protocol, max_head)   protocol.on_head(url, headers)
 *   ResponseParser(protocol, max_head)  protocol.on_head(reason, headers)
 *
 * `headers` is a new list of (name, value) tuples of bytes, names lower-cased, values as llhttp delimits them (no
 * surrounding whitespace). The protocol may also define on_message_begin(), on_body(bytes), on_message_complete()
 * and on_head_too_large(): called (it is expected to raise) as soon as the URL or reason, header names and values of
 * one head add up to more than `max_head` bytes, or its fields number more than MAX_FIELDS, before any more of it is
 * kept.
 *
 * And on_message(first, headers, body): a protocol that has it gets a message that begins and ends within one
 * feed_data call, with at most one piece of body, in that one call instead of on_message_begin, on_head, on_body and
 * on_message_complete. The parser holds those calls back until it knows: it makes them, in their order, as soon as
 * the message turns out otherwise (an upgrade, a second piece of body, the end of the bytes fed, an error, a head
 * too large). So on_message must do exactly what the four calls would.
 *
 * Errors and upgrades are raised as httptools raises them (httptools.HttpParserError and its subclasses, with an
 * exception raised by a callback as the error's __context__; httptools.HttpParserUpgrade(offset) once an upgrade's
 * head is parsed), so the relay handles both implementations alike.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#include "llhttp.h"

static PyObject *ParserError, *CallbackError, *InvalidStatusError, *InvalidMethodError, *InvalidURLError, *Upgrade;
static PyObject *method_names[64];  /* bytes per llhttp method number, made on first use */
static PyObject *version_10, *version_11;

/* Fields per head (a chunked body's trailer fields included). The byte limit alone would let 64 KiB of empty
 * headers ("a:" lines) make about 60,000 pairs of Python objects; real clients send a few dozen. */
#define MAX_FIELDS 256
/* A piece buffer grown past this is freed once its piece is taken: one large head does not pin its size. */
#define PIECE_KEEP 4096

typedef struct {
    PyObject_HEAD
    llhttp_t parser;
    llhttp_settings_t settings;
    PyObject *on_message_begin, *on_head, *on_body, *on_message_complete, *on_head_too_large, *on_message;
    PyObject *error;    /* raised by a callback during the current feed_data */
    PyObject *first;    /* the URL (request) or reason phrase (response) of the head being parsed */
    PyObject *name;     /* the header name waiting for its value */
    PyObject *headers;  /* list of (name, value) of the head being parsed */
    char *piece;        /* the URL, reason, name or value being delimited: llhttp may hand it over in parts */
    size_t piece_len, piece_cap;
    Py_ssize_t head_bytes, max_head;
    int fields;         /* of the head being parsed */
    /* Held back for on_message (see the top of this file): the begin call, then the head, then one piece of body. */
    int begin_held;
    PyObject *held_first, *held_headers, *held_body;
    int ready;          /* __init__ ran: llhttp is initialised */
    int busy;           /* inside llhttp_execute: llhttp cannot be re-entered from a callback */
} Parser;

#define PARSER(p) ((Parser *)(p)->data)

/* A callback's exception is kept for feed_data to raise as the parse error's context (as httptools does). */
static int keep_error(Parser *self) {
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    Py_XDECREF(type);
    Py_XDECREF(traceback);
    Py_XSETREF(self->error, value);
    return -1;
}

static int call0(Parser *self, PyObject *callback) {
    if (callback == NULL) {
        return 0;
    }
    PyObject *result = PyObject_CallNoArgs(callback);
    if (result == NULL) {
        return keep_error(self);
    }
    Py_DECREF(result);
    return 0;
}

static int call_on_body(Parser *self, PyObject *body) {
    if (self->on_body == NULL) {
        return 0;
    }
    PyObject *result = PyObject_CallOneArg(self->on_body, body);
    if (result == NULL) {
        return keep_error(self);
    }
    Py_DECREF(result);
    return 0;
}

/* The calls held back for on_message, made now, in their order: the message is not one on_message call. */
static int release_held(Parser *self) {
    /* Taken first: each is made once, even when one of them raises (then the rest are dropped with the parse). */
    int begin = self->begin_held;
    PyObject *first = self->held_first, *headers = self->held_headers, *body = self->held_body;
    self->begin_held = 0;
    self->held_first = self->held_headers = self->held_body = NULL;
    int failed = begin ? call0(self, self->on_message_begin) : 0;
    if (!failed && headers != NULL) {
        PyObject *result = PyObject_CallFunctionObjArgs(self->on_head, first, headers, NULL);
        if (result == NULL) {
            failed = keep_error(self);
        }
        Py_XDECREF(result);
    }
    if (!failed && body != NULL) {
        failed = call_on_body(self, body);
    }
    Py_XDECREF(first);
    Py_XDECREF(headers);
    Py_XDECREF(body);
    return failed;
}

/* A head past a limit: the protocol's on_head_too_large is called (to raise), and parsing stops either way. */
static int refuse_head(Parser *self) {
    if (release_held(self) < 0) {
        llhttp_set_error_reason(&self->parser, "callback error");
        return HPE_USER;
    }
    if (self->on_head_too_large != NULL && call0(self, self->on_head_too_large) < 0) {
        llhttp_set_error_reason(&self->parser, "`on_head_too_large` callback error");
        return HPE_USER;
    }
    llhttp_set_error_reason(&self->parser, "head too large");
    return HPE_USER;
}

static int add_piece(Parser *self, const char *at, size_t length) {
    self->head_bytes += (Py_ssize_t)length;
    if (self->max_head >= 0 && self->head_bytes > self->max_head) {
        return refuse_head(self);
    }
    if (length == 0) {
        return 0;
    }
    if (self->piece_len + length > self->piece_cap) {
        size_t cap = self->piece_cap ? self->piece_cap : 256;
        while (cap < self->piece_len + length) {
            cap *= 2;
        }
        char *grown = PyMem_Realloc(self->piece, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            keep_error(self);
            llhttp_set_error_reason(&self->parser, "out of memory");
            return HPE_USER;
        }
        self->piece = grown;
        self->piece_cap = cap;
    }
    memcpy(self->piece + self->piece_len, at, length);
    self->piece_len += length;
    return 0;
}

/* The piece delimited so far, as bytes (lower-cased for a header name); the piece starts anew. */
static PyObject *take_piece(Parser *self, int lower) {
    PyObject *taken = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)self->piece_len);
    if (taken == NULL) {
        return NULL;
    }
    char *out = PyBytes_AS_STRING(taken);
    if (lower) {
        for (size_t i = 0; i < self->piece_len; i++) {
            char c = self->piece[i];
            out[i] = (c >= 'A' && c <= 'Z') ? (char)(c + 32) : c;
        }
    } else if (self->piece_len) {
        memcpy(out, self->piece, self->piece_len);
    }
    self->piece_len = 0;
    if (self->piece_cap > PIECE_KEEP) {
        PyMem_Free(self->piece);
        self->piece = NULL;
        self->piece_cap = 0;
    }
    return taken;
}

static int on_message_begin(llhttp_t *p) {
    Parser *self = PARSER(p);
    self->head_bytes = 0;
    self->fields = 0;
    self->piece_len = 0;
    Py_CLEAR(self->first);
    Py_CLEAR(self->name);
    Py_XSETREF(self->headers, PyList_New(0));
    if (self->headers == NULL) {
        return keep_error(self);
    }
    if (self->on_message != NULL) {
        self->begin_held = 1;
        return 0;
    }
    return call0(self, self->on_message_begin);
}

static int on_piece(llhttp_t *p, const char *at, size_t length) {
    return add_piece(PARSER(p), at, length);
}

static int on_first_complete(llhttp_t *p) {
    Parser *self = PARSER(p);
    PyObject *first = take_piece(self, 0);
    if (first == NULL) {
        return keep_error(self);
    }
    Py_XSETREF(self->first, first);
    return 0;
}

static int on_name_complete(llhttp_t *p) {
    Parser *self = PARSER(p);
    if (++self->fields > MAX_FIELDS) {
        return refuse_head(self);
    }
    PyObject *name = take_piece(self, 1);
    if (name == NULL) {
        return keep_error(self);
    }
    Py_XSETREF(self->name, name);
    return 0;
}

static int on_value_complete(llhttp_t *p) {
    Parser *self = PARSER(p);
    PyObject *value = take_piece(self, 0);
    if (value == NULL) {
        return keep_error(self);
    }
    PyObject *name = self->name;
    self->name = NULL;
    if (name == NULL) {  /* llhttp delimits a name before every value: not reached */
        name = PyBytes_FromStringAndSize("", 0);
        if (name == NULL) {
            Py_DECREF(value);
            return keep_error(self);
        }
    }
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(name);
        Py_DECREF(value);
        return keep_error(self);
    }
    PyTuple_SET_ITEM(pair, 0, name);
    PyTuple_SET_ITEM(pair, 1, value);
    /* After the head (`headers` handed over) these are a chunked body's trailer fields: counted, not kept. */
    int failed = self->headers != NULL && PyList_Append(self->headers, pair) < 0;
    Py_DECREF(pair);
    return failed ? keep_error(self) : 0;
}

static int on_headers_complete(llhttp_t *p) {
    Parser *self = PARSER(p);
    if (self->on_head != NULL) {
        PyObject *first = self->first;
        if (first == NULL) {  /* a response without a reason phrase ("HTTP/1.1 204\r\n") */
            first = PyBytes_FromStringAndSize("", 0);
            if (first == NULL) {
                return keep_error(self);
            }
        } else {
            Py_INCREF(first);
        }
        PyObject *headers = self->headers;
        self->headers = NULL;
        if (headers == NULL) {
            headers = PyList_New(0);
            if (headers == NULL) {
                Py_DECREF(first);
                return keep_error(self);
            }
        }
        if (self->begin_held && !p->upgrade) {  /* begun in these bytes, and it may end within them: held */
            self->held_first = first;
            self->held_headers = headers;
            return 0;
        }
        if (release_held(self) < 0) {
            Py_DECREF(first);
            Py_DECREF(headers);
            return -1;
        }
        PyObject *result = PyObject_CallFunctionObjArgs(self->on_head, first, headers, NULL);
        Py_DECREF(first);
        Py_XDECREF(headers);
        if (result == NULL) {
            return keep_error(self);
        }
        Py_DECREF(result);
    }
    /* As httptools: an upgrade's body is not this parser's to read (the bytes after the head are the new protocol's) */
    return p->upgrade ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t length) {
    Parser *self = PARSER(p);
    int holding = self->held_headers != NULL;
    if (self->on_body == NULL && !holding) {
        return 0;
    }
    PyObject *body = PyBytes_FromStringAndSize(at, (Py_ssize_t)length);
    if (body == NULL) {
        keep_error(self);
        llhttp_set_error_reason(p, "`on_body` callback error");
        return HPE_USER;
    }
    if (holding && self->held_body == NULL) {  /* the first piece: the message may still end within these bytes */
        self->held_body = body;
        return 0;
    }
    int failed = (holding && release_held(self) < 0) || call_on_body(self, body) < 0;
    Py_DECREF(body);
    if (failed) {
        llhttp_set_error_reason(p, "`on_body` callback error");
        return HPE_USER;
    }
    return 0;
}

static int on_message_complete(llhttp_t *p) {
    Parser *self = PARSER(p);
    if (self->held_headers == NULL) {
        return call0(self, self->on_message_complete);
    }
    /* Begun, headed and ended within one feed_data call: one call for all of it. */
    PyObject *first = self->held_first, *headers = self->held_headers, *body = self->held_body;
    self->held_first = self->held_headers = self->held_body = NULL;
    self->begin_held = 0;
    if (body == NULL) {
        body = PyBytes_FromStringAndSize("", 0);
    }
    PyObject *result = body == NULL ? NULL : PyObject_CallFunctionObjArgs(self->on_message, first, headers, body, NULL);
    Py_DECREF(first);
    Py_DECREF(headers);
    Py_XDECREF(body);
    if (result == NULL) {
        return keep_error(self);
    }
    Py_DECREF(result);
    return 0;
}

/* As httptools: a callback the protocol does not have (or sets to None) is not called. */
static PyObject *callback(PyObject *protocol, const char *name) {
    PyObject *found = PyObject_GetAttrString(protocol, name);
    if (found == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
    } else if (found == Py_None) {
        Py_CLEAR(found);
    }
    return found;
}

static int parser_init(Parser *self, PyObject *args, PyObject *kwargs, llhttp_type_t type) {
    static char *keywords[] = {"protocol", "max_head", NULL};
    PyObject *protocol;
    Py_ssize_t max_head = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|n", keywords, &protocol, &max_head)) {
        return -1;
    }
    if (self->busy) {  /* from one of its own callbacks: llhttp and the held calls are in use */
        PyErr_SetString(PyExc_RuntimeError, "__init__ called from one of this parser's own callbacks");
        return -1;
    }
    Py_CLEAR(self->on_message_begin);
    Py_CLEAR(self->on_head);
    Py_CLEAR(self->on_body);
    Py_CLEAR(self->on_message_complete);
    Py_CLEAR(self->on_head_too_large);
    Py_CLEAR(self->on_message);
    Py_CLEAR(self->held_first);
    Py_CLEAR(self->held_headers);
    Py_CLEAR(self->held_body);
    self->begin_held = 0;
    self->on_message_begin = callback(protocol, "on_message_begin");
    self->on_head = callback(protocol, "on_head");
    self->on_body = callback(protocol, "on_body");
    self->on_message_complete = callback(protocol, "on_message_complete");
    self->on_head_too_large = callback(protocol, "on_head_too_large");
    self->on_message = self->on_head != NULL ? callback(protocol, "on_message") : NULL;
    if (PyErr_Occurred()) {  /* reading an attribute raised something else than AttributeError */
        return -1;
    }
    self->max_head = max_head;
    self->head_bytes = 0;
    self->piece_len = 0;

    llhttp_settings_init(&self->settings);
    self->settings.on_message_begin = on_message_begin;
    self->settings.on_url = on_piece;
    self->settings.on_url_complete = on_first_complete;
    self->settings.on_status = on_piece;
    self->settings.on_status_complete = on_first_complete;
    self->settings.on_header_field = on_piece;
    self->settings.on_header_field_complete = on_name_complete;
    self->settings.on_header_value = on_piece;
    self->settings.on_header_value_complete = on_value_complete;
    self->settings.on_headers_complete = on_headers_complete;
    self->settings.on_body = on_body;
    self->settings.on_message_complete = on_message_complete;
    llhttp_init(&self->parser, type, &self->settings);
    self->parser.data = self;
    self->ready = 1;
    return 0;
}

static int request_init(Parser *self, PyObject *args, PyObject *kwargs) {
    return parser_init(self, args, kwargs, HTTP_REQUEST);
}

static int response_init(Parser *self, PyObject *args, PyObject *kwargs) {
    return parser_init(self, args, kwargs, HTTP_RESPONSE);
}

static int parser_traverse(Parser *self, visitproc visit, void *arg) {
    Py_VISIT(self->on_message_begin);
    Py_VISIT(self->on_head);
    Py_VISIT(self->on_body);
    Py_VISIT(self->on_message_complete);
    Py_VISIT(self->on_head_too_large);
    Py_VISIT(self->on_message);
    Py_VISIT(self->error);
    Py_VISIT(self->headers);
    Py_VISIT(self->held_headers);
    return 0;
}

static int parser_clear(Parser *self) {
    Py_CLEAR(self->on_message_begin);
    Py_CLEAR(self->on_head);
    Py_CLEAR(self->on_body);
    Py_CLEAR(self->on_message_complete);
    Py_CLEAR(self->on_head_too_large);
    Py_CLEAR(self->on_message);
    Py_CLEAR(self->held_first);
    Py_CLEAR(self->held_headers);
    Py_CLEAR(self->held_body);
    Py_CLEAR(self->error);
    Py_CLEAR(self->first);
    Py_CLEAR(self->name);
    Py_CLEAR(self->headers);
    return 0;
}

static void parser_dealloc(Parser *self) {
    PyObject_GC_UnTrack(self);
    parser_clear(self);
    PyMem_Free(self->piece);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *error_for(Parser *self, llhttp_errno_t err) {
    PyObject *cls;
    switch (err) {
    case HPE_CB_MESSAGE_BEGIN:
    case HPE_CB_HEADERS_COMPLETE:
    case HPE_CB_MESSAGE_COMPLETE:
    case HPE_CB_CHUNK_HEADER:
    case HPE_CB_CHUNK_COMPLETE:
    case HPE_CB_URL_COMPLETE:
    case HPE_CB_STATUS_COMPLETE:
    case HPE_CB_HEADER_FIELD_COMPLETE:
    case HPE_CB_HEADER_VALUE_COMPLETE:
    case HPE_USER:
        cls = CallbackError;
        break;
    case HPE_INVALID_STATUS:
        cls = InvalidStatusError;
        break;
    case HPE_INVALID_METHOD:
        cls = InvalidMethodError;
        break;
    case HPE_INVALID_URL:
        cls = InvalidURLError;
        break;
    default:
        cls = ParserError;
    }
    const char *reason = llhttp_get_error_reason(&self->parser);
    return PyObject_CallFunction(cls, "s", reason ? reason : "");
}

static PyObject *feed_data(Parser *self, PyObject *data) {
    if (!self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "the parser was not initialised (__init__ was not called)");
        return NULL;
    }
    if (self->busy) {  /* a callback feeding its own parser: llhttp keeps pointers into the outer call's bytes */
        PyErr_SetString(PyExc_RuntimeError, "feed_data called from one of this parser's own callbacks");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    Py_INCREF(self);  /* a callback may drop the last other reference to its parser */
    self->busy = 1;
    llhttp_errno_t err = llhttp_execute(&self->parser, view.buf, (size_t)view.len);
    /* The bytes ended (or an error came) inside a message: the calls held back for on_message are made. A callback
     * failing there fails the parse as it would have where it was held, and the parser stays failed, as llhttp does. */
    if ((self->begin_held || self->held_headers != NULL) && self->error == NULL && release_held(self) < 0) {
        err = HPE_USER;
        self->parser.error = HPE_USER;
        llhttp_set_error_reason(&self->parser, "callback error");
    }
    self->begin_held = 0;  /* (a callback that failed earlier in this call left nothing to make) */
    Py_CLEAR(self->held_first);
    Py_CLEAR(self->held_headers);
    Py_CLEAR(self->held_body);
    self->busy = 0;
    PyObject *raised = NULL;
    if (self->parser.upgrade == 1 && err == HPE_PAUSED_UPGRADE) {
        Py_ssize_t offset = llhttp_get_error_pos(&self->parser) - (const char *)view.buf;
        llhttp_resume_after_upgrade(&self->parser);
        raised = PyObject_CallFunction(Upgrade, "n", offset);
    } else if (err != HPE_OK) {
        raised = error_for(self, err);
        if (raised != NULL && self->error != NULL) {
            PyException_SetContext(raised, self->error);  /* steals the reference */
            self->error = NULL;
        }
    }
    Py_CLEAR(self->error);
    PyBuffer_Release(&view);
    Py_DECREF(self);
    if (raised != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(raised), raised);
        Py_DECREF(raised);
        return NULL;
    }
    if (PyErr_Occurred()) {  /* making the exception failed */
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *get_method(Parser *self, PyObject *unused) {
    unsigned method = self->parser.method;
    if (method >= sizeof(method_names) / sizeof(method_names[0])) {
        return PyBytes_FromString(llhttp_method_name((llhttp_method_t)method));
    }
    if (method_names[method] == NULL) {
        method_names[method] = PyBytes_FromString(llhttp_method_name((llhttp_method_t)method));
        if (method_names[method] == NULL) {
            return NULL;
        }
    }
    return Py_NewRef(method_names[method]);
}

static PyObject *get_http_version(Parser *self, PyObject *unused) {
    if (self->parser.http_major == 1 && self->parser.http_minor == 1) {
        return Py_NewRef(version_11);
    }
    if (self->parser.http_major == 1 && self->parser.http_minor == 0) {
        return Py_NewRef(version_10);
    }
    return PyUnicode_FromFormat("%d.%d", self->parser.http_major, self->parser.http_minor);
}

static PyObject *should_keep_alive(Parser *self, PyObject *unused) {
    return PyBool_FromLong(llhttp_should_keep_alive(&self->parser));
}

static PyObject *should_upgrade(Parser *self, PyObject *unused) {
    return PyBool_FromLong(self->parser.upgrade);
}

static PyObject *get_status_code(Parser *self, PyObject *unused) {
    return PyLong_FromLong(self->parser.status_code);
}

static PyMethodDef request_methods[] = {
    {"feed_data", (PyCFunction)feed_data, METH_O, "Parse bytes, calling the protocol's callbacks."},
    {"get_method", (PyCFunction)get_method, METH_NOARGS, "The request's method, as bytes."},
    {"get_http_version", (PyCFunction)get_http_version, METH_NOARGS, "The HTTP version, as '1.1'."},
    {"should_keep_alive", (PyCFunction)should_keep_alive, METH_NOARGS, "Whether the connection may be kept."},
    {"should_upgrade", (PyCFunction)should_upgrade, METH_NOARGS, "Whether the message asks for an upgrade."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef response_methods[] = {
    {"feed_data", (PyCFunction)feed_data, METH_O, "Parse bytes, calling the protocol's callbacks."},
    {"get_status_code", (PyCFunction)get_status_code, METH_NOARGS, "The answer's status code."},
    {"get_http_version", (PyCFunction)get_http_version, METH_NOARGS, "The HTTP version, as '1.1'."},
    {"should_keep_alive", (PyCFunction)should_keep_alive, METH_NOARGS, "Whether the connection may be kept."},
    {"should_upgrade", (PyCFunction)should_upgrade, METH_NOARGS, "Whether the message asks for an upgrade."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject RequestParserType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rhone_local._http1.RequestParser",
    .tp_doc = "An HTTP/1.x request parser calling protocol.on_head(url, headers) once per head.",
    .tp_basicsize = sizeof(Parser),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)request_init,
    .tp_dealloc = (destructor)parser_dealloc,
    .tp_traverse = (traverseproc)parser_traverse,
    .tp_clear = (inquiry)parser_clear,
    .tp_methods = request_methods,
};

static PyTypeObject ResponseParserType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "rhone_local._http1.ResponseParser",
    .tp_doc = "An HTTP/1.x response parser calling protocol.on_head(reason, headers) once per head.",
    .tp_basicsize = sizeof(Parser),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)response_init,
    .tp_dealloc = (destructor)parser_dealloc,
    .tp_traverse = (traverseproc)parser_traverse,
    .tp_clear = (inquiry)parser_clear,
    .tp_methods = response_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "rhone_local._http1",
    .m_doc = "The edge's HTTP/1.1 parsers on llhttp, one Python call per head (see rhone_local/http1.py).",
    .m_size = -1,
};

static int take_error(PyObject *errors, const char *name, PyObject **into) {
    *into = PyObject_GetAttrString(errors, name);
    return *into == NULL ? -1 : 0;
}

PyMODINIT_FUNC PyInit__http1(void) {
    PyObject *errors = PyImport_ImportModule("httptools.parser.errors");
    if (errors == NULL) {
        return NULL;
    }
    int failed = take_error(errors, "HttpParserError", &ParserError) < 0
        || take_error(errors, "HttpParserCallbackError", &CallbackError) < 0
        || take_error(errors, "HttpParserInvalidStatusError", &InvalidStatusError) < 0
        || take_error(errors, "HttpParserInvalidMethodError", &InvalidMethodError) < 0
        || take_error(errors, "HttpParserInvalidURLError", &InvalidURLError) < 0
        || take_error(errors, "HttpParserUpgrade", &Upgrade) < 0;
    Py_DECREF(errors);
    if (failed) {
        return NULL;
    }
    version_10 = PyUnicode_InternFromString("1.0");
    version_11 = PyUnicode_InternFromString("1.1");
    if (version_10 == NULL || version_11 == NULL) {
        return NULL;
    }
    if (PyType_Ready(&RequestParserType) < 0 || PyType_Ready(&ResponseParserType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "RequestParser", (PyObject *)&RequestParserType) < 0
        || PyModule_AddObjectRef(m, "ResponseParser", (PyObject *)&ResponseParserType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
