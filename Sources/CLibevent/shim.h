// libevent core, pthreads support and evhttp. <sys/types.h> must come first (DESIGN §6).
#include <sys/types.h>
#include <sys/time.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <event2/http.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
