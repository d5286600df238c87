// hiredis with a libevent adapter of our own. <sys/types.h> first: libevent's event-config.h
// defines _GNU_SOURCE, and both modules must agree on fd_set (DESIGN §6).
#include <sys/types.h>
#include <sys/time.h>
#include <stdlib.h>
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
