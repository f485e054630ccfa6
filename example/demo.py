"""``make demo`` / ``make demo-stop``: the bundled example app, blue/green behind nginx on 127.0.0.1:8080.

Everything lives in ``.demo/`` of the checkout (git-ignored); supervisord keeps running in the
background until ``make demo-stop`` stops it and every process under it, by pid.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import psutil

from example.stack import REPO, Stack, free_port
from supervisor_bluegreen.ctl.example_files import example_text

ROOT = Path(os.environ.get("BLUEGREEN_DEMO_ROOT", REPO / ".demo"))  # the tests run the demo elsewhere
PORT = int(os.environ.get("BLUEGREEN_DEMO_PORT", "8080"))
# a Django test that fails, as a printf argument (the demo prints it for the user to push)
FAILING_TEST = (
    "from django.test import SimpleTestCase\\n\\n\\nclass Broken(SimpleTestCase):\\n"
    '    def test_fails(self):\\n        self.fail("this release is broken")\\n'
)
WATCH = 20.0  # the watch window after each go-live: long enough to try, short enough not to hold the next deploy


def running_pid() -> int | None:
    """The demo's supervisord pid, when it still runs."""
    try:
        pid = int((ROOT / "run" / "stack.pid").read_text())
    except (OSError, ValueError):
        return None
    try:
        return pid if "supervisord" in " ".join(psutil.Process(pid).cmdline()) else None
    except psutil.Error:
        return None


def port_taken(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def instructions(conf: Path) -> str:
    ctl = f"{sys.prefix}/bin/supervisorctl -c {conf}"
    return f"""
Demo running: supervisord with the bluegreen plugin, abiapp_blue and abiapp_green (gunicorn, the
bundled Django example app on MariaDB), abiapp_celery (on RabbitMQ) and nginx on
http://127.0.0.1:{PORT}/ (all state in {ROOT}).

  curl -i http://127.0.0.1:{PORT}/                  # X-Bluegreen-Color / X-App-Version: who answered
  {ctl} bluegreen status
  {ctl} bluegreen switch                  # health-gated switch to the idle color
  {ctl} bluegreen rollback                # back to the previous color
  {ctl} bluegreen health abiapp green     # probe a color over its own socket
  {ctl} bluegreen history
  {ctl} help bluegreen

Push a change and watch it go live (the bare repository's pre-receive hook deploys it before git accepts
the push; history and the log name you, as the commit's committer, beside the Unix account):
  git clone {ROOT}/app.git /tmp/abiapp-work && cd /tmp/abiapp-work
  echo "my first change" > VERSION && git add VERSION
  git -c user.name=You -c user.email=you@example.org commit -qm "my first change" && git push
  curl -s http://127.0.0.1:{PORT}/version
  {ctl} bluegreen history -n 1
Push a release whose tests fail: the push is rejected, main and the live color stay as they were:
  printf '{FAILING_TEST}' > exampleapp/tests_broken.py
  git add exampleapp/tests_broken.py && git -c user.name=You -c user.email=you@example.org commit -qm "broken"
  git push                                 # ! [remote rejected] main -> main (pre-receive hook declined)
  git reset -q --hard HEAD~1               # back to what is live
Or deploy by hand, following every step:
  {ctl} bluegreen deploy abiapp main
  {ctl} bluegreen deploy abiapp main --wait   # and through the {WATCH:g} s watch window after go-live:
      # kill -9 the new live color's gunicorn meanwhile (kill -9 $({ctl} pid abiapp_COLOR), COLOR
      # as bluegreen status names it) and traffic goes back by itself; the command then fails with the reason
  {ctl} bluegreen log -f                  # reattach to a running deploy from another terminal

  make demo-stop                           # stops everything the demo started
"""


def install_hook(stack: Stack) -> None:
    """The shipped pre-receive hook in the demo's bare repository, set up as ``bluegreen init`` does on a server
    (``bluegreen example hook``, then bluegreen.app, .branch and .push), so a push whose deploy fails is rejected.

    init's push command goes through the one sudo rule (``sudo -n bluegreen push -c CONF``); the demo's pusher is
    the user who started supervisord, so it runs ``bluegreen push -c CONF`` itself.
    """
    bluegreen = f"{sys.prefix}/bin/bluegreen"
    bare = stack.root / "app.git"
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(example_text("hook", bluegreen))
    hook.chmod(0o755)
    push = f"{bluegreen} push -c {stack.conf}"
    for key, value in (("app", "abiapp"), ("branch", "main"), ("push", push)):
        subprocess.run(["git", "--git-dir", str(bare), "config", f"bluegreen.{key}", value], check=True)


def start() -> int:
    if running_pid():
        print(f"demo already running (supervisord pid {running_pid()})")
        print(instructions(ROOT / "etc" / "supervisord.conf"))
        return 0
    if port_taken(PORT):
        print(f"error: 127.0.0.1:{PORT} is already in use; stop whatever listens there first", file=sys.stderr)
        return 1
    shutil.rmtree(ROOT, ignore_errors=True)
    stack = Stack(ROOT, port=PORT, rpc_port=free_port(), watch=str(WATCH))
    print(f"laying out the demo in {ROOT} ...", flush=True)
    stack.layout()
    print("starting supervisord (blue, green, nginx, bluegreen listener) ...", flush=True)
    try:
        stack.start()
    except TimeoutError as exc:
        print(f"error: {exc}; see {ROOT}/log", file=sys.stderr)
        stack.stop()
        return 1
    install_hook(stack)
    for title, command in (
        ("first health-gated switch: blue goes live", ("switch", "abiapp", "blue")),
        ("a deploy from the bare repository: main goes live on green", ("deploy", "abiapp", "main")),
    ):
        print(title, flush=True)
        out = stack.ctl("bluegreen", *command)
        print(out.stdout, end="")
        if out.returncode != 0:
            print(f"error: {command[0]} failed; the demo is left running for a look (make demo-stop)", file=sys.stderr)
            return 1
    print(stack.ctl("bluegreen", "status").stdout, end="")
    print(instructions(stack.conf))
    return 0


def stop() -> int:
    pid = running_pid()
    if pid is None:
        print("demo is not running")
        return 0
    stack = Stack(ROOT, pid=pid, name=(ROOT / "run" / "stack.name").read_text().strip())
    stack.stop()
    stack.drop()
    print(f"demo stopped (supervisord pid {pid} and everything under it)")
    return 0


if __name__ == "__main__":
    sys.exit({"start": start, "stop": stop}[sys.argv[1] if len(sys.argv) > 1 else "start"]())
