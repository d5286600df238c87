// hiredis with its libevent adapter. <sys/types.h> first: libevent's event-config.h
// defines _GNU_SOURCE, and both modules must agree on fd_set (DESIGN §6).
#include <sys/types.h>
#include <sys/time.h>
#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libevent.h>
