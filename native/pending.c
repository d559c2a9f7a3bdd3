/* The registry of read maps waiting for their mount (see pending.h). */
#include <pthread.h>
#include <stdlib.h>

#include "pending.h"

static pthread_mutex_t pending_lock = PTHREAD_MUTEX_INITIALIZER;
static pending *pending_list;
static unsigned next_id = 1;

unsigned pending_add(readmap *m, napi_threadsafe_function on_error) {
  pending *p = malloc(sizeof *p);
  if (p == NULL) return 0;
  pthread_mutex_lock(&pending_lock);
  p->id = next_id++;
  p->map = m;
  p->on_error = on_error;
  p->next = pending_list;
  pending_list = p;
  unsigned id = p->id;
  pthread_mutex_unlock(&pending_lock);
  return id;
}

pending *pending_take(unsigned id) {
  pending *found = NULL;
  pthread_mutex_lock(&pending_lock);
  for (pending **pp = &pending_list; *pp != NULL; pp = &(*pp)->next) {
    if ((*pp)->id == id) {
      found = *pp;
      *pp = found->next;
      break;
    }
  }
  pthread_mutex_unlock(&pending_lock);
  return found;
}
