#!/usr/bin/env bash
# Install what `make demo`, `make test` and `make bench` need on a fresh Debian 12 machine (as root):
# a virtualenv in .venv with this package and its test dependencies, and Debian's nginx.
# Debian's nginx package starts a system nginx on port 80 when installed; we keep it from doing so
# (policy-rc.d exits 101 during the install) because the demo and the tests start their own.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
stamp=".venv/.installed-$(cat setup.py | sha1sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
    touch "$stamp"
fi

if [ ! -x /usr/sbin/nginx ]; then
    policy=/usr/sbin/policy-rc.d
    saved=""
    if [ -e "$policy" ]; then saved=$(mktemp); cp -p "$policy" "$saved"; fi
    restore() { if [ -n "$saved" ]; then cp -p "$saved" "$policy"; rm -f "$saved"; else rm -f "$policy"; fi; }
    trap restore EXIT
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
fi
for tool in git mysqldump; do
    command -v "$tool" >/dev/null || { echo "bootstrap: $tool is missing" >&2; exit 1; }
done
echo "bootstrap: .venv ready, $(/usr/sbin/nginx -v 2>&1)"
