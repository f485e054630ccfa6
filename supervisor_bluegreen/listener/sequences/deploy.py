"""The deploy sequence: a commit from git to live, the seed's post-receive hook made safe.

``deploy()`` reads like the hook, one named step per line. What the hook lacked is in the steps:
the build runs in a release folder of its own (host/releases.py) while both colors keep running, so
a refused build leaves the live color and the rollback target exactly as they were; only then is the
idle color drained, stopped and pointed at the release, and it must answer its health check before
any traffic moves; the switch is atomic. Any failure before the switch leaves the live color as it was.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import pwd
import subprocess
import time
from collections.abc import Collection

from supervisor_bluegreen.host import appprobe, backup, deps, drain, links, releases, runner
from supervisor_bluegreen.host.migrations import gate
from supervisor_bluegreen.host.supervisor import SupervisorError
from supervisor_bluegreen.listener.golive import (
    flip,
    go_live,
    health_gate,
    reconcile,
    stop_color,
    verify_public,
    watching,
    workers_follow,
)
from supervisor_bluegreen.listener.run import Cancelled, Interrupted, Run, StepFailed, supervisor_failed
from supervisor_bluegreen.shared import releaselist
from supervisor_bluegreen.shared.config import App, Color, Deploy
from supervisor_bluegreen.shared.jobargs import DeployArgs
from supervisor_bluegreen.shared.model import Window
from supervisor_bluegreen.shared.refs import ref_problem
from supervisor_bluegreen.shared.stepdefs import Stage, stages
from supervisor_bluegreen.shared.store import check_private_dir, read_json, write_json_atomic

BASE_PYTHON = "/usr/bin/python3"  # a release's first virtualenv, when no release or color has one to copy


def settings(app: App) -> Deploy:
    if app.deploy is None:
        raise StepFailed(f"{app.name} has no repo configured: deploy needs repo, checkout and build")
    return app.deploy


def git(run: Run, *args: str, cwd: str | None = None, timeout: float = 120) -> str:
    """git as the app's user (git refuses repositories owned by someone else), its stdout."""
    user = run.app.user
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SUPERVISOR_", "GIT_"))}
    try:
        done = runner.capture(["git", *args], cwd=cwd, env=env, user=user, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StepFailed(f"git {args[0]}: {exc}") from None
    if done.returncode != 0:
        raise StepFailed(f"git {' '.join(args[:2])} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


# -- steps ---------------------------------------------------------------------------------
def resolve(run: Run, ref: str) -> str:
    """REF to one commit of the app's repository; unknown refs are refused before anything changes."""
    problem = ref_problem(ref)
    if problem:
        raise StepFailed(problem)
    user = run.app.user
    if user:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise StepFailed(f"the app's user {user!r} does not exist on this machine") from None
    repo = settings(run.app).repo
    try:
        commit = git(
            run, f"--git-dir={repo}", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"
        )
    except StepFailed:
        raise StepFailed(f"unknown ref {ref!r} in {repo}") from None
    run.log(f"{ref} is {commit}")
    run.store.update_job(run.job.id, ref=ref, commit=commit)
    branch = settings(run.app).branch
    if ref == branch:  # status says when the live commit is not the branch's head
        run.store.update(branch_head={"branch": ref, "commit": commit, "at": time.time()})
    elif ref == commit and pushed(run, repo, commit):
        run.branch_after = branch  # a push the hook staged: the branch moves to it once it is live
    return commit


def pushed(run: Run, repo: str, commit: str) -> bool:
    """Whether ``commit`` is a push to the deploying branch, staged by the pre-receive hook for this deploy."""
    try:
        git(run, f"--git-dir={repo}", "rev-parse", "--verify", "--quiet", f"refs/bluegreen/incoming/{commit}")
    except StepFailed:
        return False
    return True


def idle_color(run: Run, live: str | None) -> Color:
    """The color to build: the one that is not live (the first color before any go-live)."""
    target = run.app.other(live) if live else run.app.colors[0]
    run.store.update_job(run.job.id, color=target.name)
    return target


def drain_idle(run: Run, target: Color) -> None:
    """Wait until the idle color serves no request and holds no connection (bounded), then stop it.

    Its release is about to be replaced, so first it stops being the rollback target: a kill during
    the stop must not leave ``previous`` naming a color that no longer runs.
    """
    if run.store.read().get("previous") == target.name:
        run.store.update(previous=None)
        run.log(f"{target.name} is no longer a rollback target")
    if run.sup.state(target.program) in ("STOPPED", "EXITED", "FATAL"):
        run.log(f"{target.program} is not running")
        return
    if not drain.listening(drain.read_proc_net_unix(), target.socket):
        run.log(f"nothing listens on {target.socket}: no connection to wait for")
    result = drain.wait_drained(target.socket, settings(run.app).drain_timeout)
    if result.drained:
        run.log(f"{target.name} idle after {result.waited:.2f} s")
    else:
        run.log(
            f"{target.name} still holds {result.remaining} connection(s) after {result.waited:.0f} s: stopping anyway"
        )
    try:
        run.sup.stop(target.program)
    except SupervisorError as exc:
        raise supervisor_failed(exc) from None


def new_release(run: Run, target: Color, commit: str) -> Color:
    """A release folder of its own for this build, with a clone of the repository and a virtualenv.

    Returns ``target`` as it will be when it runs the release (its paths moved into the folder): every
    build step runs there, and nothing either color runs is touched.
    """
    app = run.app
    try:
        releases.ensure_home(app)
        taken = set(os.listdir(settings(app).releases))
    except (releaselist.ReleaseError, OSError) as exc:
        raise StepFailed(str(exc)) from None
    release_id = releases.new_id(commit, time.time(), taken)
    build_at = releases.view(target, releases.folder(app, release_id))
    run.log(f"release {release_id} in {build_at.root}")
    run.store.update_job(run.job.id, release=release_id)
    git(run, "clone", "--quiet", "--no-checkout", settings(app).repo, build_at.checkout, cwd=settings(app).releases)
    make_venv(run, target, build_at)
    return build_at


def plain_env() -> dict[str, str]:
    """The environment of file commands (cp, rm, a virtualenv made): a PATH, none of the app's settings."""
    return {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C.UTF-8"}


def make_venv(run: Run, target: Color, build_at: Color) -> None:
    """The release's own virtualenv (when the color has one): a hard-link copy of the live one, else new.

    A copy of an environment whose requirements did not change needs no install: the deps stamp of the
    release it came from comes with it, so ``deps`` is skipped.
    """
    dest = releases.own_venv(build_at)
    if not dest:
        return
    live = run.live_before
    sources = [run.app.color(live)] if live else []
    sources.append(target)
    source = next((c for c in sources if os.path.exists(os.path.join(releases.own_venv(c), "bin", "pip"))), None)
    if source is None:
        argvs = releases.fresh_venv_argvs(BASE_PYTHON, dest)
    else:
        argvs = releases.copy_venv_argvs(releases.own_venv(source), dest)
    for argv in argvs:
        run.log("$ " + " ".join(argv[:3]) + (" ..." if len(argv) > 3 else ""))
        try:
            runner.run(argv, cwd=settings(run.app).releases, env=plain_env(), user=run.app.user,
                       timeout=settings(run.app).step_timeout, log=run.log, cancelled=run.cancelled)  # fmt: skip
        except runner.StepError as exc:
            raise StepFailed(f"virtualenv: {exc}") from None
    if source is not None:
        for step in settings(run.app).steps:
            if step.when_changed:
                old = read_json(stamp_path(run, source, step), None)
                if old:
                    write_json_atomic(stamp_path(run, build_at, step), old)


def update_checkout(run: Run, target: Color, commit: str) -> None:
    """The release's checkout at exactly ``commit``: fetched from the repo, forced, no stray file left."""
    repo, cwd = settings(run.app).repo, target.checkout
    # refs/bluegreen/incoming/<commit>: where the pre-receive hook stages a push not yet accepted (git quarantine)
    refspecs = (
        "+refs/heads/*:refs/bluegreen/heads/*",
        "+refs/tags/*:refs/bluegreen/tags/*",
        "+refs/bluegreen/incoming/*:refs/bluegreen/incoming/*",
    )
    git(run, "fetch", "--quiet", "--no-tags", "--force", repo, *refspecs, cwd=cwd)
    git(run, "checkout", "--quiet", "--force", "--detach", commit, cwd=cwd)
    git(run, "clean", "-ffdxq", cwd=cwd)
    head = git(run, "rev-parse", "HEAD", cwd=cwd)
    if head != commit:
        raise StepFailed(f"{cwd} is at {head}, not {commit}")


def build_release(run: Run, build_at: Color, commit: str) -> None:
    """The build steps in their stages (stepdefs.stages): independent ones side by side, each a named step.

    Whether the tests wait for the static files is the app's answer (its settings). The app's last deploy
    recorded it, so the tests start at once; an app deployed for the first time is asked first (the probe).
    """
    config = settings(run.app)
    plain = stages(config.steps, config.side_by_side)
    reading = stages(config.steps, config.side_by_side, reads_collected=True)
    for stage, if_reading in zip(plain, reading, strict=True):
        if stage == if_reading:
            run.side_by_side(lanes(build_at, stage, commit))
        elif tests_read_collected(run, build_at):
            run.log("the tests read collected static files (the app's storage or compress offline): they run after")
            run.side_by_side(lanes(build_at, if_reading, commit))
        else:
            run_beside_static_files(run, build_at, stage, commit)


def tests_read_collected(run: Run, build_at: Color) -> bool:
    """The app's last answer (probe_app stores it), or the probe's for an app never asked."""
    known = run.store.read().get("reads_collected")
    return app_facts(run, build_at, "test").reads_collected if known is None else bool(known)


def run_beside_static_files(run: Run, build_at: Color, stage: Stage, commit: str) -> None:
    """The tests beside collectstatic, as the app's last answer allows. When they fail and this release's
    own answer changed, the failure says so: the next deploy runs them after (probe_app stores the answer,
    asked now if the failure came before the gate's probe)."""
    try:
        run.side_by_side(lanes(build_at, stage, commit))
    except StepFailed as exc:
        try:
            reads = probe_app(run, build_at).facts().reads_collected
        except appprobe.ProbeError:
            reads = False
        if not reads:
            raise
        raise StepFailed(
            f"{exc} (the tests ran beside collectstatic, and this release's settings make them read what it "
            "writes: the next deploy runs them after it)"
        ) from None


def lanes(build_at: Color, stage: Stage, commit: str) -> list[list[tuple[object, ...]]]:
    """A stage as run.side_by_side takes it: per lane, each step's (name, function, arguments)."""
    return [[(step.name, build, build_at, step, commit) for step in lane] for lane in stage]


def probe_app(run: Run, target: Color) -> appprobe.Probed:
    """The deploy's one probe of its release: the gate, the plan of the stages, compress and the backup read
    it; the first to ask runs it (a named step), the others wait for its answer."""
    with run.probe_lock:
        if run.probed is None:
            run.probed = run.step("probe", run_probe, target)
            with contextlib.suppress(appprobe.ProbeError):  # what the next deploy plans its stages by
                run.store.update(reads_collected=run.probed.facts().reads_collected)
        return run.probed


def run_probe(run: Run, target: Color) -> appprobe.Probed:
    """Django's migration plan and settings facts of the release, in its interpreter, as the app user."""
    config = settings(run.app)
    try:
        env = runner.environment(target, config.user)
        argv = runner.expand(gate.probe_argv(), target)
        done = runner.capture(argv, cwd=target.checkout, env=env, user=config.user, timeout=config.step_timeout)
    except (OSError, subprocess.TimeoutExpired, runner.StepError) as exc:
        raise StepFailed(f"probe: {exc}") from None
    return appprobe.Probed(done.stdout, done.returncode, done.stderr)


def app_facts(run: Run, target: Color, asking: str) -> appprobe.AppFacts:
    """What the release's settings say (``asking``: the step that needs it, named in a failure)."""
    try:
        return probe_app(run, target).facts()
    except appprobe.ProbeError as exc:
        raise StepFailed(f"{asking}: {exc}") from None


def build(run: Run, target: Color, step: runner.BuildStep, commit: str) -> None:
    """One build step as the app's user in the idle checkout, with its timeout, output into the log."""
    config = settings(run.app)
    try:
        env = runner.environment(target, config.user)
    except runner.StepError as exc:  # the environment file cannot be read
        raise StepFailed(f"{step.name}: {exc}") from None
    if not step.argv:
        builtin = {"backup": take_backup, "gate": gate_migrations, "deps": install_deps}[step.name]
        return builtin(run, target, commit, env)
    if step.name == "migrate" and run.gate is not None:
        return migrate_planned(run, target, step, env)
    if step.needs_command and step.needs_command not in app_facts(run, target, step.name).commands:
        run.log(f"{step.name}: skipped, the app has no {step.needs_command!r} management command")
        return None
    stamp, digest = changed_since_last_run(run, target, step)
    if stamp and not digest:
        return None
    run_command(run, target, step, runner.expand(step.argv, target), env)
    if stamp:
        write_json_atomic(stamp, {"sha256": digest, "commit": commit})
    return None


def install_deps(run: Run, target: Color, commit: str, env: dict[str, str]) -> None:
    """The release's dependencies the way the app declares them (host/deps.py: uv.lock, pyproject.toml,
    requirements.txt), installed only when a file that decides them, or the command, changed."""
    config = settings(run.app)

    def read(name: str) -> bytes | None:
        try:  # the checkout is the app user's: read as that user, bounded, never as root
            return runner.read_as_user(os.path.join(target.checkout, name), config.user)
        except runner.ReadError as exc:
            raise StepFailed(f"deps: {exc}") from None

    python = runner.values(target)["python"]
    venv = os.path.dirname(os.path.dirname(python))
    install = deps.plan(read, python, venv, config.test_requirements)
    if install is None:
        run.log(f"deps: skipped, {deps.NONE_FOUND}")
        return
    step = next(s for s in config.steps if s.name == "deps")
    stamp, digest = stamp_path(run, target, step), install.digest()
    if (read_json(stamp, {}) or {}).get("sha256") == digest:
        run.log(f"deps: skipped, {install.describe()} unchanged since its virtualenv last installed them")
        return
    run_command(run, target, step, list(install.argv), {**env, **dict(install.env)})
    write_json_atomic(stamp, {"sha256": digest, "commit": commit, "kind": install.kind})


def run_command(run: Run, target: Color, step: runner.BuildStep, argv: list[str], env: dict[str, str]) -> None:
    """One command of a build step, as the app's user in the release's checkout, its output into the log."""
    config = settings(run.app)
    run.log("$ " + " ".join(argv))
    try:
        runner.run(
            argv,
            cwd=target.checkout,
            env=env,
            user=config.user,
            timeout=config.step_timeout,
            log=run.log,
            cancelled=run.cancelled,
            uncut=uncut(run, step) if step.uncut else None,
        )
    except runner.StepError as exc:
        raise StepFailed(f"{step.name} failed: {exc}{missing_runner(step, exc)}") from None
    finally:
        if step.uncut:
            run.store.update_job(run.job.id, uncut=None)


def missing_runner(step: runner.BuildStep, exc: runner.StepError) -> str:
    """A step whose runner (``python -m pytest``) the release lacks says so, and where that is set."""
    argv = list(step.argv)
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
    if not module or f"No module named {module}" not in str(exc):
        return ""
    return (
        f" (step_{step.name} runs {module}, which the release's virtualenv lacks: install it with the app's "
        "test-only dependencies, test_requirements or uv's dev group, or change step_" + step.name + ")"
    )


def gate_migrations(run: Run, target: Color, commit: str, env: dict[str, str]) -> None:
    """Refuse, before anything migrates, any migration the code serving now cannot survive.

    The old color keeps serving until the switch, so a migration that removes, renames, narrows or
    constrains what it reads and writes breaks live traffic the moment it runs. Contract migrations
    (marked) wait until after the switch and the watch window. ``--allow-unsafe-migrations`` overrides,
    recorded in history with who used it.
    """
    try:
        report = probe_app(run, target).report()
    except gate.GateError as exc:
        raise StepFailed(f"migration gate: {exc}") from None
    for line in gate.summary(report):
        run.log(line)
    refusal = gate.refusal(report, allow_unsafe=run.allow_unsafe)
    if refusal:
        raise StepFailed(refusal)
    if not report.passes:
        who = run.job.who or "?"
        run.log(f"migration gate: UNSAFE migrations allowed by {who} ({gate.ALLOW_FLAG})")
        run.store.update_job(run.job.id, unsafe_allowed=who)
    run.gate = report


def migrate_planned(run: Run, target: Color, step: runner.BuildStep, env: dict[str, str]) -> None:
    """What the gate let through, never cut in half; a failure says which migrations were applied."""
    config = settings(run.app)
    assert run.gate is not None
    argvs = gate.pre_switch_argvs(run.gate, runner.values(target)["python"])
    if not argvs:
        run.log("migrate: nothing to apply before the switch")
    for argv in argvs:
        run.log("$ " + " ".join(argv))
        try:
            runner.run(
                argv, cwd=target.checkout, env=env, user=config.user, timeout=config.step_timeout, log=run.log,
                cancelled=run.cancelled, uncut=uncut(run, step),
            )  # fmt: skip
        except runner.StepError as exc:
            raise StepFailed(f"migrate failed: {exc}; {migrated_so_far(run, target)}") from None
        finally:
            run.store.update_job(run.job.id, uncut=None)


def migrated_so_far(run: Run, target: Color) -> str:
    """After a failed migrate: which of the planned migrations the live database now has (it may have changed)."""
    assert run.gate is not None
    planned = [m.key for m in run.gate.migrations]
    try:  # a probe of its own: the database changed since the deploy's first
        left = {m.key for m in run_probe(run, target).report().migrations}
    except StepFailed as exc:
        return f"could not tell which migrations were applied ({exc})"
    except gate.GateError as exc:
        return f"could not tell which migrations were applied (migration gate: {exc})"
    applied = [key for key in planned if key not in left]
    run.db_changed = applied
    if not applied:
        return "no migration was applied"
    rest = [key for key in planned if key in left]
    return f"the DATABASE CHANGED: applied {', '.join(applied)}; not applied: {', '.join(rest) or 'none'}"


def uncut(run: Run, step: runner.BuildStep) -> runner.Uncut:
    """How ``step`` runs so that nothing cuts it in half; its pid is recorded for a restarted listener."""
    output = run.store.output_path(run.job.id)

    def started(pid: int) -> None:
        run.store.update_job(run.job.id, uncut={"pid": pid, "step": step.name, "since": time.time()})

    return runner.Uncut(output=output, started=started, forced=run.forced)


def changed_since_last_run(run: Run, target: Color, step: runner.BuildStep) -> tuple[str, str]:
    """For a step that runs only on change: (where its last input digest is kept, the new digest or '').

    An empty digest means: skip (the file is absent, or the same as when this color last ran the step).
    """
    if not step.when_changed:
        return "", ""
    stamp = stamp_path(run, target, step)
    try:  # the checkout is the app user's: read as that user, bounded, never as root
        data = runner.read_as_user(os.path.join(target.checkout, step.when_changed), run.app.user)
    except runner.ReadError as exc:
        raise StepFailed(f"{step.name}: {exc}") from None
    if data is None:
        run.log(f"{step.name}: skipped, the checkout has no {step.when_changed}")
        return stamp, ""
    digest = hashlib.sha256(data).hexdigest()
    if (read_json(stamp, {}) or {}).get("sha256") == digest:
        run.log(f"{step.name}: skipped, {step.when_changed} unchanged since its virtualenv last ran it")
        return stamp, ""
    return stamp, digest


def stamp_path(run: Run, at: Color, step: runner.BuildStep) -> str:
    """Where a run-on-change step keeps its last input digest: one per virtualenv it installs into.

    A release's own virtualenv is named by the release; a color's (before its first release) by the color;
    one shared by both colors (a python outside the roots) has one stamp.
    """
    venv = releases.own_venv(at)
    key = os.path.basename(at.root.rstrip("/")) if venv else "shared"
    return os.path.join(run.store.dir, f"{step.name}.{key}.json")


def take_backup(run: Run, target: Color, commit: str, env: dict[str, str]) -> None:
    """A restorable dump of the database the app is configured with, taken before anything migrates.

    With ``verify_backup`` it is restored into a scratch database and compared before migrate may run.
    """
    config = settings(run.app)
    backup_dir = backup.backup_dir_of(run.app)
    python = runner.values(target)["python"]
    try:
        check_private_dir(backup_dir, "backup_dir")  # root writes dumps there: nobody else may
        database = app_facts(run, target, "backup").database
        plan = backup.plan_dump(database, backup_dir, run.app.name, commit, datetime.datetime.now(), python=python)
        path = backup.run_dump(plan, user=config.user, timeout=config.step_timeout, log=run.log)
        run.store.update_job(run.job.id, backup=path)  # a failed verify still names the file
        if config.verify_backup:
            checked = backup.verify(
                database, path, python=python, user=config.user, timeout=config.step_timeout, log=run.log
            )
            run.store.update_job(run.job.id, backup_verify=checked.as_dict())
            if not checked.ok:
                raise StepFailed(f"backup {path} does not restore as taken: {'; '.join(checked.mismatches)}")
    except (backup.BackupError, OSError) as exc:
        raise StepFailed(f"backup failed: {exc}") from None
    for old in backup.prune(backup_dir, run.app.name, config.backup_keep):
        run.log(f"backup: removed old {old}")


def record_built(run: Run, build_at: Color, commit: str) -> None:
    """The release built and passed its tests and the gate: kept for rollbacks; old ones pruned."""
    release_id = os.path.basename(build_at.root)
    built = releaselist.Release(release_id, commit, time.time(), run.job.id)
    kept = [r.record() for r in releaselist.recorded(run.store.read()) if r.id != release_id]
    run.store.update(releases=[*kept, built.record()])
    prune(run, protected={release_id})


def prune(run: Run, protected: Collection[str] = ()) -> None:
    """Remove release folders beyond ``keep_releases`` (never one a color points at), as the app user."""
    config = settings(run.app)
    built = releaselist.recorded(run.store.read())
    try:
        names = os.listdir(config.releases)
    except OSError as exc:
        run.log(f"releases: cannot list {config.releases}: {exc}")
        return
    gone = releases.to_prune(names, built, config.keep_releases, {*releases.running(run.app).values(), *protected})
    if not gone:
        return
    try:
        runner.run(releases.remove_argv(run.app, gone), cwd=config.releases, env=plain_env(),
                   user=run.app.user, timeout=config.step_timeout, log=run.log)  # fmt: skip
    except runner.StepError as exc:
        run.log(f"releases: could not remove {', '.join(gone)}: {exc}")
        return
    run.store.update(releases=[r.record() for r in built if r.id not in gone])
    for name in gone:
        for step in config.steps:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(run.store.dir, f"{step.name}.{name}.json"))
    run.log(f"releases: removed {', '.join(gone)}")


def wait_for_window(run: Run) -> str | None:
    """The build ran beside a watch window; the start waits for it: the color it stops is the window's way back.

    Returns the live color after the window (it may have rolled back meanwhile).
    """
    said = 0
    while True:
        window = Window.from_state(run.store.read().get("watch"))
        if window is None:
            break
        if said != window.job:
            until = time.strftime("%H:%M:%S", time.localtime(window.until))
            run.log(f"built; waiting for the watch window of job {window.job} (until {until}) before the start")
            run.store.update_job(run.job.id, waiting_for=window.job)
            said = window.job
        if run.cancelled():
            raise Cancelled("cancelled while waiting for the watch window")
        if run.stopping.is_set():
            raise Interrupted("interrupted while waiting for the watch window: the listener is stopping")
        time.sleep(0.2)
    return reconcile(run) if said else run.live_before


def point_color(run: Run, target: Color, build_at: Color, commit: str) -> None:
    """The stopped idle color re-pointed at the release; status shows what it holds from now on."""
    release_id = os.path.basename(build_at.root)
    try:
        releases.point(run.app, target, release_id)
    except releaselist.ReleaseError as exc:
        raise StepFailed(str(exc)) from None
    colors = dict(run.store.read().get("colors", {}))
    colors[target.name] = {"version": commit[:7], "commit": commit, "release": release_id}
    run.store.update(colors=colors)
    run.log(f"{target.name} now runs release {release_id}")


def start_color(run: Run, target: Color) -> float:
    """Ask supervisor to start the idle color; returns the instant from which its crashes count."""
    since = time.monotonic()
    try:
        run.sup.start(target.program)
    except SupervisorError as exc:
        raise supervisor_failed(exc) from None
    return since


def record_deploy(run: Run, live: str | None, target: Color, commit: str) -> Window | None:
    """The new color live at ``commit``, the old one its rollback target, the watch window open.

    Contract migrations the gate held back are recorded to run after the window (contract.py), or, with
    ``contract = manual``, when ``bluegreen contract`` asks.
    """
    colors = dict(run.store.read().get("colors", {}))
    colors[target.name] = {**colors.get(target.name, {}), "version": commit[:7], "commit": commit}
    pending = None
    if run.gate is not None and run.gate.deferred:
        pending = {"job": run.job.id, "color": target.name, "migrations": [d.key for d in run.gate.deferred]}
    head = (
        {"branch_head": {"branch": run.branch_after, "commit": commit, "at": time.time()}} if run.branch_after else {}
    )
    return go_live(run, live, target, colors=colors, contract=pending, **head)


# -- the sequence ----------------------------------------------------------------------------
def deploy(run: Run, args: DeployArgs) -> str:
    """git -> live for one app: resolve, build a release beside the live site, then start, gate, switch, watch."""
    config = settings(run.app)
    run.allow_unsafe = args.allow_unsafe
    commit = run.step("resolve", resolve, args.ref or config.branch)
    live = run.step("reconcile", reconcile)
    target = idle_color(run, live)
    run.announce("start", f"{run.app.name}: deploying {commit[:7]} to {target.name}", commit=commit)
    started = False
    try:
        build_at = run.step("release", new_release, target, commit)
        run.step("checkout", update_checkout, build_at, commit)
        build_release(run, build_at, commit)
        run.step("built", record_built, build_at, commit)
        live = run.step("window", wait_for_window)
        target = idle_color(run, live)
        run.step("drain", drain_idle, target)
        run.step("point", point_color, target, build_at, commit)
        since = run.step("start", start_color, target)
        started = True
        run.step("health gate", health_gate, target, since)
        run.step("switch", flip, target)
        run.step("verify", verify_public, target, live)
        window = run.step("record", record_deploy, live, target, commit)
    except Exception:
        if started:
            stop_unless_live(run, target)
        raise
    message = f"{run.app.name}: {target.name} live at {commit[:7]} in {run.elapsed():.1f} s"
    run.announce("success", message, commit=commit, color=target.name)
    return workers_follow(run, target, message + watching(window, run.app, run.job.id))


def stop_unless_live(run: Run, target: Color) -> None:
    """A build that never went live (or was switched away from) stops: it is nobody's rollback target."""
    try:
        if links.live_color(run.app) == target.name:
            return
    except links.LiveLinkError:
        return  # the links are broken: touch nothing more
    run.log(f"stopping {target.program}")
    stop_color(run, target)
