// hiredis with a libevent adapter of our own. <sys/types.h> first: libevent's event-config.h
// defines _GNU_SOURCE, and both modules must agree on fd_set (DESIGN §6).
#include <sys/types.h>
#include <sys/time.h>
#include <stdlib.h>
#include <string.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

// The adapter hiredis 0.14 ships (adapters/libevent.h) uses one-shot events: every read
// removes the read event and hiredis adds it back ("always re-schedule reads"), which costs an
// epoll_ctl per reply batch on each connection, the busiest file descriptors of a node. This
// one keeps persistent events and remembers what is added, so hiredis's repeated add/delete
// requests cost nothing, and a write-event add/delete pair within one loop iteration cancels in
// libevent's changelist. Same contract as hiredis's adapter otherwise (attach once; hiredis
// calls cleanup when it frees the context, also from inside these callbacks, which libevent
// allows).
typedef struct concord_redis_events {
    redisAsyncContext *context;
    struct event *read_event, *write_event;
    int reading, writing;
} concord_redis_events;

static void concord_redis_on_readable(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    redisAsyncHandleRead(((concord_redis_events *)arg)->context);
}

static void concord_redis_on_writable(evutil_socket_t fd, short what, void *arg) {
    (void)fd; (void)what;
    redisAsyncHandleWrite(((concord_redis_events *)arg)->context);
}

/* Adds or deletes one persistent event, only when that changes anything. */
static void concord_redis_set(struct event *ev, int *active, int on) {
    if (*active == on) return;
    *active = on;
    if (on) event_add(ev, NULL); else event_del(ev);
}

static void concord_redis_add_read(void *p) { concord_redis_events *e = p; concord_redis_set(e->read_event, &e->reading, 1); }
static void concord_redis_del_read(void *p) { concord_redis_events *e = p; concord_redis_set(e->read_event, &e->reading, 0); }
static void concord_redis_add_write(void *p) { concord_redis_events *e = p; concord_redis_set(e->write_event, &e->writing, 1); }
static void concord_redis_del_write(void *p) { concord_redis_events *e = p; concord_redis_set(e->write_event, &e->writing, 0); }

static void concord_redis_cleanup(void *privdata) {
    concord_redis_events *e = (concord_redis_events *)privdata;
    event_free(e->read_event);
    event_free(e->write_event);
    free(e);
}

/// Attaches a new async context to `base`; REDIS_ERR if something is already attached.
static int concord_redis_attach(redisAsyncContext *ac, struct event_base *base) {
    if (ac->ev.data != NULL) return REDIS_ERR;
    concord_redis_events *e = (concord_redis_events *)calloc(1, sizeof(*e));
    if (e == NULL) return REDIS_ERR;
    e->context = ac;
    e->read_event = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, concord_redis_on_readable, e);
    e->write_event = event_new(base, ac->c.fd, EV_WRITE | EV_PERSIST, concord_redis_on_writable, e);
    if (e->read_event == NULL || e->write_event == NULL) {
        if (e->read_event) event_free(e->read_event);
        if (e->write_event) event_free(e->write_event);
        free(e);
        return REDIS_ERR;
    }
    ac->ev.addRead = concord_redis_add_read;
    ac->ev.delRead = concord_redis_del_read;
    ac->ev.addWrite = concord_redis_add_write;
    ac->ev.delWrite = concord_redis_del_write;
    ac->ev.cleanup = concord_redis_cleanup;
    ac->ev.data = e;
    // As hiredis's own adapter: both at once; writable is how a non-blocking connect completes.
    concord_redis_add_read(e);
    concord_redis_add_write(e);
    return REDIS_OK;
}

// Replies built in one arena each. hiredis's default reply functions make two mallocs per
// element (the redisReply and its string), and a node reads hundreds of elements per batch
// (XRANGE of a lease: ~14 per message; EXEC of a produce: ~3 per message): malloc and free
// were the largest item of a node's queue profile. These functions build the same redisReply
// tree in a few blocks owned by the reply's root, freed at once with it. Every object is
// preceded by a pointer to its arena, so a child finds the arena through its parent, with no
// state kept per reader. hiredis frees only roots (after an async callback; on a reader error
// or reader free, the partial root): `freeObject` frees the whole arena. Replies from such a
// reader must not be freed with freeReplyObject (the node never does; HiredisSync, which
// does, keeps the default functions).
typedef struct concord_arena_block { struct concord_arena_block *next; } concord_arena_block;
typedef struct concord_arena { concord_arena_block *blocks; char *cursor, *end; size_t grow; } concord_arena;

#define CONCORD_ARENA_MAX_FIRST (64 * 1024)

static void *concord_arena_take(concord_arena *a, size_t n) {
    n = (n + 7) & ~(size_t)7;
    if ((size_t)(a->end - a->cursor) < n) {
        size_t cap = a->grow > n ? a->grow : n;
        concord_arena_block *b = (concord_arena_block *)malloc(sizeof(concord_arena_block) + cap);
        if (b == NULL) return NULL;
        b->next = a->blocks;
        a->blocks = b;
        a->cursor = (char *)(b + 1);
        a->end = a->cursor + cap;
        if (a->grow < CONCORD_ARENA_MAX_FIRST) a->grow *= 2;
    }
    void *p = a->cursor;
    a->cursor += n;
    return p;
}

/* A new redisReply of `type` (zeroed) in the arena of the task's root, linked into its parent;
   a root starts an arena with room for `hint` more bytes. */
static redisReply *concord_arena_reply(const redisReadTask *task, int type, size_t hint) {
    concord_arena *a;
    if (task->parent == NULL) {
        size_t first = sizeof(concord_arena *) + sizeof(redisReply) + hint;
        if (first > CONCORD_ARENA_MAX_FIRST) first = CONCORD_ARENA_MAX_FIRST;
        first = (first + 7) & ~(size_t)7;
        a = (concord_arena *)malloc(sizeof(concord_arena) + first);
        if (a == NULL) return NULL;
        a->blocks = NULL;
        a->cursor = (char *)(a + 1);
        a->end = a->cursor + first;
        a->grow = 4096;
    } else {
        a = ((concord_arena **)task->parent->obj)[-1];
    }
    char *p = (char *)concord_arena_take(a, sizeof(concord_arena *) + sizeof(redisReply));
    if (p == NULL) {
        if (task->parent == NULL) free(a);
        return NULL;
    }
    *(concord_arena **)p = a;
    redisReply *r = (redisReply *)(p + sizeof(concord_arena *));
    memset(r, 0, sizeof(*r));
    r->type = type;
    if (task->parent != NULL) {
        redisReply *parent = (redisReply *)task->parent->obj;
        parent->element[task->idx] = r;
    }
    return r;
}

static void concord_arena_free(void *reply);

/* Out of memory after `r` was made: hiredis frees its root (r->reply) but does not know a new
   root yet, so that one is freed here. */
static void *concord_arena_failed(const redisReadTask *task, redisReply *r) {
    if (task->parent == NULL) concord_arena_free(r);
    return NULL;
}

static void *concord_arena_string(const redisReadTask *task, char *str, size_t len) {
    redisReply *r = concord_arena_reply(task, task->type, len + 1);
    if (r == NULL) return NULL;
    char *buf = (char *)concord_arena_take(((concord_arena **)r)[-1], len + 1);
    if (buf == NULL) return concord_arena_failed(task, r);
    memcpy(buf, str, len);
    buf[len] = '\0';
    r->str = buf;
    r->len = len;
    return r;
}

static void *concord_arena_array(const redisReadTask *task, int elements) {
    /* Room for the elements and, roughly, what they hold (an XRANGE entry is ~500 bytes). */
    size_t n = elements > 0 ? (size_t)elements : 0;
    redisReply *r = concord_arena_reply(task, REDIS_REPLY_ARRAY, n * (sizeof(redisReply *) + 256));
    if (r == NULL) return NULL;
    if (n > 0) {
        r->element = (redisReply **)concord_arena_take(((concord_arena **)r)[-1], n * sizeof(redisReply *));
        if (r->element == NULL) return concord_arena_failed(task, r);
        memset(r->element, 0, n * sizeof(redisReply *));
    }
    r->elements = n;
    return r;
}

static void *concord_arena_integer(const redisReadTask *task, long long value) {
    redisReply *r = concord_arena_reply(task, REDIS_REPLY_INTEGER, 0);
    if (r != NULL) r->integer = value;
    return r;
}

static void *concord_arena_nil(const redisReadTask *task) {
    return concord_arena_reply(task, REDIS_REPLY_NIL, 0);
}

static void concord_arena_free(void *reply) {
    if (reply == NULL) return;
    concord_arena *a = ((concord_arena **)reply)[-1];
    concord_arena_block *b = a->blocks;
    while (b != NULL) {
        concord_arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(a);
}

static redisReplyObjectFunctions concord_arena_functions = {
    concord_arena_string, concord_arena_array, concord_arena_integer, concord_arena_nil, concord_arena_free
};

/// Makes the context's reader build replies in arenas (above).
static void concord_redis_use_arenas(redisAsyncContext *ac) {
    ac->c.reader->fn = &concord_arena_functions;
}
