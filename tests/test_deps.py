"""The deps step's decision (host/deps.py): which install the app's files ask for, and when it is due again."""

from __future__ import annotations

from supervisor_bluegreen.host import deps


def reader(files: dict[str, str]):
    return lambda name: files[name].encode() if name in files else None


def test_uv_lock_means_uv_sync_frozen_into_the_releases_virtualenv() -> None:
    files = {"pyproject.toml": '[project]\nname = "shop"\n', "uv.lock": "version = 1\n", "requirements.txt": "x\n"}
    install = deps.plan(reader(files), "/srv/shop/releases/r1/venv/bin/python", "/srv/shop/releases/r1/venv")
    assert install is not None and install.kind == "uv"
    assert install.argv[0] == deps.uv_executable() and install.argv[1:5] == ("sync", "--frozen", "--inexact", "--quiet")
    assert dict(install.env)["UV_PROJECT_ENVIRONMENT"] == "/srv/shop/releases/r1/venv"
    assert sorted(install.inputs) == ["pyproject.toml", "uv.lock"]


def test_requirements_with_includes_and_test_only_files() -> None:
    files = {
        "requirements.txt": "-r requirements/production.txt\n",
        "requirements/production.txt": "-r base.txt\ngunicorn\n",
        "requirements/base.txt": "django\n-c ../constraints.txt\n",
        "constraints.txt": "django<6\n",
        "requirements/local.txt": "-r base.txt\npytest-django\n",
    }
    install = deps.plan(reader(files), "py", "venv", ("requirements/local.txt", "requirements/absent.txt"))
    assert install is not None and install.kind == "requirements"
    assert install.argv == (
        "py", "-m", "pip", "install", "--quiet", "--requirement", "requirements.txt",
        "--requirement", "requirements/local.txt",
    )  # fmt: skip
    assert sorted(install.inputs) == sorted(files)


def test_pyproject_without_a_lock_is_pip_install_dot_and_nothing_is_none() -> None:
    install = deps.plan(reader({"pyproject.toml": "[project]\n"}), "py", "venv")
    assert install is not None and (install.kind, install.argv) == (
        "pyproject",
        ("py", "-m", "pip", "install", "--quiet", "."),
    )
    assert deps.plan(reader({}), "py", "venv") is None


def test_the_digest_changes_with_any_input_and_with_the_command_only() -> None:
    files = {"requirements.txt": "-r base.txt\n", "base.txt": "django\n"}
    first = deps.plan(reader(files), "py", "venv")
    assert first is not None and first.digest() == deps.plan(reader(dict(files)), "py", "venv").digest()  # type: ignore[union-attr]
    changed = deps.plan(reader({**files, "base.txt": "django==5.2\n"}), "py", "venv")
    other_python = deps.plan(reader(files), "py3.12", "venv")
    assert len({first.digest(), changed.digest(), other_python.digest()}) == 3  # type: ignore[union-attr]


def test_includes_never_leave_the_checkout_nor_loop() -> None:
    files = {"requirements.txt": "-r requirements.txt\n-r ../../etc/passwd\n-r /etc/shadow\n"}
    install = deps.plan(reader(files), "py", "venv")
    assert install is not None and list(install.inputs) == ["requirements.txt"]
