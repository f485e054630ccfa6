#!/usr/bin/env bash
# `make install-test`: the built wheel on a fresh Debian 12 root with Debian's own supervisor and nginx.
#
#   1. build the wheel from this checkout;
#   2. a fresh Debian root (debootstrap once into a cached base, copied anew for every run) with Debian's
#      supervisor, nginx, python3-venv, git and sudo;
#   3. install as the README says: a virtualenv at /opt/supervisor-bluegreen holding the wheel;
#   4. a sample Django app made by `django-admin startproject` (no line of this project in it), in git;
#   5. `bluegreen init` on it, then what init prints: start nginx and supervisord, the first deploy;
#   6. `bluegreen doctor` must be clean; running init again must change nothing;
#   7. a change pushed with `git push` (pre-receive hook -> sudo bluegreen push) goes live under continuous
#      requests through nginx with zero failed ones;
#   8. a second app set up beside it the way init's next steps say (reread && update: the plugin is loaded)
#      costs the first zero failed requests;
#   9. an app shaped like cookiecutter-django's (uv.lock, pytest-django with --reuse-db, an HTTPS redirect,
#      a Celery worker on the host's RabbitMQ): init stops on the redirect naming its fixes, init again with
#      the fix as --env, the first deploy, doctor clean, a push under load with zero failed requests, and a
#      Celery task run by the new release.
# Servers bind 127.0.0.1 or unix sockets only (the root shares the host's network to reach the package
# registries). As root. Needs debootstrap (apt-get install debootstrap) and overlayfs. KEEP=1 leaves the root
# mounted for a look (umount it, then remove upper/ and overlay-work/ beside it).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=${BLUEGREEN_INSTALL_TEST_DIR:-/var/tmp/bluegreen-install-test}
base=$work/base${SUITE:+-$SUITE}
root=$work/root
port=${PORT:-18080}
default_port=${DEFAULT_PORT:-18081}
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
nginx_pkg=nginx  # trixie: one nginx package; bookworm: its small build, nginx-light (gone in trixie)
[ "$suite" = bookworm ] && nginx_pkg=nginx-light
started=$(date +%s)
say() { printf '\n==> [%3ss] %s\n' "$(($(date +%s) - started))" "$*"; }

[ "$(id -u)" = 0 ] || { echo "install-test: run as root" >&2; exit 1; }
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
mkdir -p "$work"

say "build the wheel"
rm -rf "$work/dist"
"$here/.venv/bin/pip" wheel --quiet --no-deps -w "$work/dist" "$here"
wheel=$(ls "$work"/dist/supervisor_bluegreen-*.whl)

if [ ! -x "$base/usr/bin/supervisord" ]; then
    say "debootstrap $suite into $base (once; later runs copy it)"
    rm -rf "$base"
    debootstrap --variant=minbase \
        --include="supervisor,$nginx_pkg,python3,python3-venv,python3-pip,git,ca-certificates,procps,sudo,curl" \
        "$suite" "$base" "$mirror" >"$work/debootstrap.log" 2>&1
fi
if [ ! -x "$base/usr/bin/sudo" ]; then
    chroot "$base" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
        /bin/sh -c 'apt-get install -y -qq sudo >/dev/null' || {
        cp /etc/resolv.conf "$base/etc/resolv.conf"
        chroot "$base" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
            /bin/sh -c 'apt-get update -qq && apt-get install -y -qq sudo >/dev/null'
    }
fi

mounted=()
cleanup() {
    set +e
    if [ -x "$root/usr/bin/supervisorctl" ] && [ -S "$root/run/supervisor.sock" ]; then
        chroot "$root" supervisorctl shutdown >/dev/null 2>&1
    fi
    if [ -f "$root/run/nginx.pid" ]; then chroot "$root" nginx -s quit >/dev/null 2>&1; fi
    for _ in $(seq 50); do
        pgrep -f "^/usr/bin/python3 /usr/bin/supervisord" >/dev/null || break
        sleep 0.2
    done
    for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}"; done
    if [ "${KEEP:-0}" != 1 ]; then
        umount -l "$root" 2>/dev/null
        rm -rf "$work/upper" "$work/overlay-work"
    fi
}
trap cleanup EXIT

say "a fresh Debian root: $root (the cached base under an empty overlay)"
umount -l "$root" 2>/dev/null || true
rm -rf "$root" "$work/upper" "$work/overlay-work"
mkdir -p "$root" "$work/upper" "$work/overlay-work"
mount -t overlay overlay -o "lowerdir=$base,upperdir=$work/upper,workdir=$work/overlay-work" "$root"
for fs in proc sys dev dev/pts dev/shm; do  # dev/shm: Celery's prefork pool makes its semaphores there
    mkdir -p "$root/$fs"
    case $fs in
    proc) mount -t proc proc "$root/proc" ;;
    sys) mount -t sysfs sys "$root/sys" ;;
    *) mount --bind "/$fs" "$root/$fs" ;;
    esac
    mounted+=("$root/$fs")
done
cp /etc/resolv.conf "$root/etc/resolv.conf"
# a machine that reaches the registries through a TLS-inspecting proxy: the root trusts the same extra CAs
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null 2>&1
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
fi
# Debian's default site stays enabled (as on a real server), moved off port 80 to a loopback port
sed -i -e "s/listen 80 default_server;/listen 127.0.0.1:$default_port default_server;/" \
    -e '/listen \[::\]:80 default_server;/d' "$root/etc/nginx/sites-enabled/default"
in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 /bin/bash -euo pipefail -c "$1"; }

say "install: a virtualenv at /opt/supervisor-bluegreen with the wheel (Debian's python refuses pip)"
cp "$wheel" "$root/tmp/"
in_root "python3 -m venv /opt/supervisor-bluegreen
/opt/supervisor-bluegreen/bin/pip install --quiet --disable-pip-version-check /tmp/$(basename "$wheel")
ln -sf /opt/supervisor-bluegreen/bin/bluegreen /usr/local/bin/bluegreen
bluegreen --version"

say "a sample Django app: django-admin startproject, production settings, in git"
app_src=$root/srv/src/mysite
mkdir -p "$app_src"
"$here/.venv/bin/django-admin" startproject mysite "$app_src"
cat >>"$app_src/mysite/settings.py" <<'EOF'

# production: settings from the environment
import os

SECRET_KEY = os.environ.get("SECRET_KEY", SECRET_KEY)
DEBUG = os.environ.get("DEBUG", "") == "1"
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
STATIC_ROOT = BASE_DIR / "staticfiles"
DATABASES["default"]["NAME"] = os.environ.get("DB_PATH", BASE_DIR / "db.sqlite3")
EOF
printf 'Django>=4.2,<6\ngunicorn==22.0.0\n' >"$app_src/requirements.txt"
printf 'staticfiles/\ndb.sqlite3\n__pycache__/\n' >"$app_src/.gitignore"
in_root "cd /srv/src/mysite && git init -q -b main && git add -A &&
git -c user.email=dev@example.org -c user.name=dev commit -qm 'the site'"

init="bluegreen init mysite /srv/src/mysite --listen 127.0.0.1:$port \
--env SECRET_KEY=not-so-secret-$RANDOM --env DB_PATH=/srv/mysite/home/db.sqlite3"
say "bluegreen init --dry-run"
in_root "$init --dry-run"
say "bluegreen init"
in_root "$init"

say "go live, as init said: nginx, supervisord (Debian's), the first deploy"
in_root "nginx -t && nginx"
in_root "supervisord -c /etc/supervisor/supervisord.conf"
for _ in $(seq 100); do
    in_root "supervisorctl status bluegreen 2>/dev/null | grep -q RUNNING" && break
    sleep 0.3
done
in_root "supervisorctl bluegreen deploy mysite"
in_root "supervisorctl bluegreen status mysite"

say "bluegreen doctor"
in_root "bluegreen doctor mysite"

say "private: the app's home 0750, its SQLite file 0600, supervisord's umask 027, the listener's log 0640"
in_root 'stat -c "%a %U %n" /srv/mysite/home /srv/mysite/home/db.sqlite3 /var/log/supervisor/bluegreen.log
[ "$(stat -c %a /srv/mysite/home)" = 750 ] && [ "$(stat -c %a /srv/mysite/home/db.sqlite3)" = 600 ]
grep "^Umask:" /proc/$(cat /var/run/supervisord.pid)/status | grep -q 0027
[ "$(stat -c %a /var/log/supervisor/bluegreen.log)" = 640 ]
grep -q "^UMask=0027" /etc/systemd/system/supervisor.service.d/bluegreen-umask.conf'

say "init again changes nothing"
in_root "find /etc/supervisor /etc/nginx /etc/supervisor-bluegreen /etc/sudoers.d /srv/mysite/app.git/hooks \
/etc/systemd/system -type f -newer /opt/supervisor-bluegreen/bin/bluegreen -exec md5sum {} + | sort > /tmp/before"
again=$(in_root "$init")
echo "$again" | grep -F 'SQLite file inside the checkout' && {
    echo "install-test: init did not see DB_PATH from the environment file" >&2
    exit 1
}
echo "$again" | grep -E '^  (created|ran|added|fixed) ' && {
    echo "install-test: the second init changed something" >&2
    exit 1
}
in_root "find /etc/supervisor /etc/nginx /etc/supervisor-bluegreen /etc/sudoers.d /srv/mysite/app.git/hooks \
/etc/systemd/system -type f -newer /opt/supervisor-bluegreen/bin/bluegreen -exec md5sum {} + | sort > /tmp/after &&
diff /tmp/before /tmp/after"

say "git push of a change, under continuous requests through nginx"
# each of 4 keep-alive connections GETs in a loop; a failure is counted, but for one kind: a request on a
# connection that already served one, failing before any answer, is sent once more on a new connection,
# as browsers do (RFC 9112 9.3.1): that is an idle keep-alive connection nginx closed (an nginx reload, which
# 1.22 does to every idle one), counted apart as a reset; allowed only where the test says nginx reloads
cat >"$root/tmp/load.py" <<EOF
import http.client, sys, time
stop_at, ok, failed, resets = time.time() + 600, 0, [], 0
port, allow_resets = int(sys.argv[1]), sys.argv[2:] == ["--allow-keepalive-resets"]
def fresh():
    return [http.client.HTTPConnection("127.0.0.1", port, timeout=10), 0]
def get(conn):
    conn.request("GET", "/admin/login/", headers={"Host": "localhost"})
    r = conn.getresponse()
    r.read()
    return r.status
conns = [fresh() for _ in range(4)]
while time.time() < stop_at:
    try:
        open("/tmp/load.stop").close()
        break
    except OSError:
        pass
    for i, (c, served) in enumerate(conns):
        try:
            try:
                status = get(c)
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                if not served:
                    raise
                resets += 1
                conns[i] = fresh()
                c = conns[i][0]
                status = get(c)
            conns[i][1] += 1
            ok += status == 200
            if status != 200:
                failed.append(status)
        except Exception as exc:
            failed.append(repr(exc))
            conns[i] = fresh()
print(f"load: {ok} ok, {len(failed)} failed {failed[:5]}, {resets} idle keep-alive connections closed by nginx")
sys.exit(1 if failed or not ok or (resets and not allow_resets) else 0)
EOF
start_load() {  # start_load PORT [--allow-keepalive-resets]: the requests above, in the background
    rm -f "$root/tmp/load.stop"
    in_root "python3 /tmp/load.py $*" >"$work/load.out" 2>&1 &
    load=$!
    sleep 2
}
stop_load() {  # stop_load WHAT: end them; none may have failed
    sleep 2
    touch "$root/tmp/load.stop"
    wait "$load" || { cat "$work/load.out"; echo "install-test: $1" >&2; exit 1; }
    cat "$work/load.out"
}
start_load "$port"
in_root "chown -R mysite: /srv/src/mysite && cd /srv/src/mysite &&
sed -i 's/^ALLOWED_HOSTS = .*/ALLOWED_HOSTS = [\"localhost\", \"127.0.0.1\", \"[::1]\"]/' mysite/settings.py &&
runuser -u mysite -- git -c user.email=dev@example.org -c user.name=dev commit -qam 'allow ::1' &&
runuser -u mysite -- git push /srv/mysite/app.git main"
stop_load "requests failed during the deploy"
in_root "supervisorctl bluegreen status mysite && bluegreen doctor mysite"
in_root 'color=$(readlink -f /srv/mysite/run/mysite.live.sock | sed "s/.*mysite\.\(.*\)\.sock/\1/")
live=$(runuser -u mysite -- git -C /srv/mysite/$color/src rev-parse HEAD)
pushed=$(git --git-dir=/srv/mysite/app.git rev-parse main)
echo "live color $color at $live; the branch main at $pushed"
[ "$live" = "$pushed" ]'
say "a second app set up beside it as init says, under continuous requests to the first"
in_root "cp -a /srv/src/mysite /srv/src/othersite && chown -R root: /srv/src/othersite"
init2="bluegreen init othersite /srv/src/othersite --listen 127.0.0.1:$((port + 2)) \
--env SECRET_KEY=other-$RANDOM --env DB_PATH=/srv/othersite/home/db.sqlite3"
start_load "$port" --allow-keepalive-resets  # a new site: nginx reloads
said=$(in_root "$init2")
echo "$said" | tail -8
echo "$said" | grep -q "supervisorctl reread && supervisorctl update" || {
    echo "install-test: init of a second app did not say reread && update" >&2
    exit 1
}
echo "$said" | grep -qE "^  supervisorctl reload|^  systemctl .*restart" && {
    echo "install-test: init of a second app told a reload that restarts the first" >&2
    exit 1
}
in_root "nginx -t && nginx -s reload && supervisorctl reread && supervisorctl update &&
supervisorctl bluegreen deploy othersite && bluegreen doctor othersite"
stop_load "the first app failed requests while a second one was set up"
say "an app shaped like cookiecutter-django: uv.lock, pytest-django, an HTTPS redirect, a Celery worker"
shop_src=$root/srv/src/shop
mkdir -p "$shop_src"
"$here/.venv/bin/django-admin" startproject config "$shop_src"
mkdir -p "$shop_src/shop" "$shop_src/tests"
cat >>"$shop_src/config/settings.py" <<'EOF'

# production, as cookiecutter-django has it: everything from the environment, HTTPS forced
import os

SECRET_KEY = os.environ.get("SECRET_KEY", SECRET_KEY)
DEBUG = False
ALLOWED_HOSTS = ["localhost", "127.0.0.1"]
STATIC_ROOT = BASE_DIR / "staticfiles"
DATABASES["default"]["NAME"] = os.environ.get("DB_PATH", BASE_DIR / "db.sqlite3")
SECURE_SSL_REDIRECT = os.environ.get("DJANGO_SECURE_SSL_REDIRECT", "True") == "True"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_QUEUE", "celery")
CELERY_TASK_ACKS_LATE = True
EOF
cat >"$shop_src/config/celery_app.py" <<'EOF'
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
app = Celery("shop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["shop"])
EOF
printf 'VERSION = "1"\n' >"$shop_src/shop/version.py"
touch "$shop_src/shop/__init__.py" "$shop_src/tests/__init__.py"
cat >"$shop_src/shop/tasks.py" <<'EOF'
import os
from pathlib import Path

from config.celery_app import app

from .version import VERSION


@app.task(name="shop.record")
def record(token: str) -> str:
    """The release that ran ``token``: one file per task in the app's home."""
    Path(os.environ["DB_PATH"]).parent.joinpath(f"ran-{token}").write_text(VERSION)
    return VERSION
EOF
cat >"$shop_src/tests/test_users.py" <<'EOF'
import pytest
from django.contrib.auth.models import User


@pytest.mark.django_db
def test_a_user_is_stored() -> None:
    User.objects.create(username="abi")
    assert User.objects.count() == 1
EOF
cat >"$shop_src/pyproject.toml" <<'EOF'
[project]
name = "shop"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["django>=4.2,<6", "gunicorn==23.0.0", "celery>=5.3,<6"]

[dependency-groups]
dev = ["pytest>=8", "pytest-django>=4.8"]

[tool.uv]
package = false

[tool.pytest.ini_options]
DJANGO_SETTINGS_MODULE = "config.settings"
addopts = "--reuse-db"
EOF
printf 'staticfiles/\ndb.sqlite3\n__pycache__/\n.venv/\n' >"$shop_src/.gitignore"
(cd "$shop_src" && "$here/.venv/bin/uv" lock --quiet --system-certs)
in_root "cd /srv/src/shop && git init -q -b main && git add -A &&
git -c user.email=dev@example.org -c user.name=dev commit -qm 'the shop'"
queue=shop_it_$RANDOM
init3="bluegreen init shop /srv/src/shop --listen 127.0.0.1:$((port + 4)) \
--env SECRET_KEY=shop-$RANDOM --env DB_PATH=/srv/shop/home/db.sqlite3 \
--env CELERY_BROKER_URL=amqp://guest:guest@127.0.0.1:5672// --env CELERY_QUEUE=$queue \
--worker 'celery -A config.celery_app worker -c 1 -n $queue@localhost'"
stopped=$(in_root "$init3" 2>&1) && { echo "$stopped"; echo "install-test: init took an HTTPS redirect for health" >&2; exit 1; }
echo "$stopped" | tail -3
echo "$stopped" | grep -q "redirects Host localhost to https://" && echo "$stopped" | grep -q "SECURE_SSL_REDIRECT" || {
    echo "install-test: init's stop did not name the redirect and its fixes" >&2
    exit 1
}
say "init again with the fix it named (the redirect off: TLS ends before this server), merged into the env file"
merged=$(in_root "$init3 --env DJANGO_SECURE_SSL_REDIRECT=False")
echo "$merged" | grep -E "merged|step_test|uv sync" || true
echo "$merged" | grep -q "merged (added DJANGO_SECURE_SSL_REDIRECT)" || {
    echo "install-test: init did not merge the new --env key" >&2
    exit 1
}
in_root "grep -q '^step_test = %(python)s -m pytest -p no:cacheprovider --create-db' /etc/supervisor/bluegreen.ini"
in_root "nginx -t && nginx -s reload && supervisorctl reread && supervisorctl update &&
supervisorctl bluegreen deploy shop && bluegreen doctor shop"

task() {  # send shop.record with a token (from blue's release: the sender's code does not matter); wait for
    # the version of the worker that ran it (each color has a worker of its own: the live one's consumes)
    in_root "runuser -u shop -- /bin/sh -c 'set -a && . /etc/supervisor-bluegreen/shop.env && cd /srv/shop/blue/src &&
exec ../venv/bin/python -c \"from shop.tasks import record; record.delay(\\\"$1\\\")\"'"
    for _ in $(seq 100); do
        [ -f "$root/srv/shop/home/ran-$1" ] && { cat "$root/srv/shop/home/ran-$1"; return; }
        sleep 0.3
    done
    echo "install-test: task $1 was not run" >&2
    exit 1
}
[ "$(task first)" = 1 ]

say "shop: a push under load, then a task run by the new code"
start_load $((port + 4))
in_root "chown -R shop: /srv/src/shop && cd /srv/src/shop && sed -i 's/1/2/' shop/version.py &&
runuser -u shop -- git -c user.email=dev@example.org -c user.name=dev commit -qam 'version 2' &&
runuser -u shop -- git push /srv/shop/app.git main"
stop_load "shop failed requests during its push"
[ "$(task second)" = 2 ] || { echo "install-test: the task did not run on the new release" >&2; exit 1; }
in_root "supervisorctl bluegreen status shop && bluegreen doctor shop"
ok=1
say "install-test passed"
