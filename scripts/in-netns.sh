#!/usr/bin/env bash
# Run a command inside a private network namespace with only loopback up, so nothing it opens
# can reach (or be reached from) any network. Falls back to running it directly, with a note,
# where the machine does not allow unprivileged namespaces.
set -euo pipefail
if [ "${VLA_RUNTIME_NO_NETNS:-0}" != 1 ] && unshare -n true 2>/dev/null; then
  exec unshare -n -- bash -c 'ip link set lo up && exec "$@"' in-netns "$@"
fi
echo "[in-netns] private network namespaces unavailable here: running on the host's loopback" >&2
exec "$@"
