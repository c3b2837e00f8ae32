#!/usr/bin/env bash
# Install the Debian packages the tests and the demo use, when missing.
# Used by `make setup` and .ci/run. Needs root and apt-get; elsewhere it
# only says what is missing and how to get it.
set -euo pipefail

# binary -> Debian package
declare -A want=(
  [redis-server]=redis-server
  [promtool]=prometheus
  [prometheus]=prometheus
  [prometheus-alertmanager]=prometheus-alertmanager
  [chromium]=chromium
  [pg_isready]=postgresql-client
  [faketime]=faketime
  [pdfinfo]=poppler-utils
)
missing=()
for bin in "${!want[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || missing+=("${want[$bin]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps chromium from pulling a desktop
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian's prometheus packages start services on install; the tests start their own
  for svc in prometheus prometheus-alertmanager; do
    (command -v service >/dev/null && service "$svc" stop >/dev/null 2>&1) || true
    pkill -x "$svc" >/dev/null 2>&1 || true
  done
else
  echo "system-deps: missing Debian packages: ${missing[*]}" >&2
  echo "system-deps: install them with: sudo apt-get install ${missing[*]}" >&2
  [ "${JOBRUNBOOK_STRICT_DEPS:-0}" = 1 ] && exit 1
fi
exit 0
