/*
 * inheritStderr(on): whether a program this process starts without Node (libfuse starting
 * fusermount to mount for a user that is not root) gets descriptor 2. Node marks its standard
 * descriptors close-on-exec at start-up, so fusermount's reason for refusing a mount ("option
 * allow_other only allowed if 'user_allow_other' is set in /etc/fuse.conf") would be written to a
 * closed descriptor and lost. Returns true when the flag was set as asked.
 */
#include <fcntl.h>
#include <stdbool.h>
#include <unistd.h>

#include "addon.h"

napi_value js_inherit_stderr(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  bool on = false;
  bool done = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 1 && napi_get_value_bool(env, argv[0], &on) == napi_ok) {
    int flags = fcntl(STDERR_FILENO, F_GETFD);
    if (flags >= 0) done = fcntl(STDERR_FILENO, F_SETFD, on ? (flags & ~FD_CLOEXEC) : (flags | FD_CLOEXEC)) == 0;
  }
  napi_value out;
  if (napi_get_boolean(env, done, &out) != napi_ok) return NULL;
  return out;
}
