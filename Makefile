# supervisor-bluegreen. Quick start on a fresh Debian 12 machine, as root:
#   make demo    # the bundled example app, blue/green behind nginx on 127.0.0.1:8080
#   make test    # the whole suite, with real supervisord, gunicorn, nginx
PY := .venv/bin/python

.PHONY: bootstrap demo demo-stop test test-fast bench chaos lint install-test fleet-test

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	@$(PY) -m example.demo start

demo-stop:
	@if [ -x $(PY) ]; then $(PY) -m example.demo stop; else echo "demo is not running"; fi

# the whole suite but the `chaos` cut of the fault matrix (make chaos runs that), two files at a time (each e2e
# module shares one stack; stacks have their own ports, database and queue), handed out in the order
# tests/conftest.py sorts them, the longest e2e files first (xdist's default reorder would start the files with
# the most tests, and leave the long e2e files for the end). `make test-fast` is the pure-Python
# layer: no `e2e` stack and no `integration` test (one that starts nginx, git, psql, manage.py, setpriv...); a test
# in it that starts any program fails (tests/conftest.py), so it starts no service and takes seconds
test: bootstrap
	.venv/bin/ruff check supervisor_bluegreen tests example bench ansible
	$(PY) -m pytest -q -m "not chaos and not fleet" -n 2 --dist loadfile --no-loadscope-reorder --durations=15

test-fast: bootstrap
	$(PY) -m pytest -q -m "not e2e and not integration and not chaos and not fleet"

bench: bootstrap
	$(PY) -m bench.switch
	$(PY) -m bench.deploy
	$(PY) -m bench.store

# the whole fault matrix (every kill point with the full preset) and the rest of the e2e matrices `make test`
# cuts (marked chaos), then randomized faults under load: kill -9 of the listener mid-deploy, releases that crash
# on import, answer 500, hang, or die after go-live; writes bench/results/chaos.json. make chaos N=20 SEED=1
N ?= 100
chaos: bootstrap
	BLUEGREEN_FAULTS_BUILD=django $(PY) -m pytest -q tests/test_e2e_faults.py
	$(PY) -m pytest -q -m chaos -n 2 --dist loadfile tests --ignore=tests/test_e2e_faults.py
	$(PY) -m bench.chaos -n $(N) $(if $(SEED),--seed $(SEED))

lint: bootstrap
	.venv/bin/ruff check supervisor_bluegreen tests example bench ansible
	.venv/bin/ruff format --check supervisor_bluegreen tests example bench ansible

# the built wheel on a fresh Debian 12 root (debootstrap, cached in /var/tmp/bluegreen-install-test) with Debian's
# supervisor and nginx: bluegreen init on a Django app made by startproject, first deploy, doctor clean, a git push
# deployed under load with zero failed requests. Minutes; not part of `make test`. KEEP=1 keeps the root.
install-test: bootstrap
	bash scripts/install-test.sh

# the Ansible collection (ansible/) over a fleet of three stacks on this machine and one database: installed with
# ansible-galaxy, its rolling_release playbook run by ansible-playbook under load (check mode, a rolling release
# migrating once, a failure on the second host rolled back on the first, the third untouched, a contract migration
# after the last window), its modules ad hoc; writes bench/results/fleet.json. Minutes; CI runs it.
fleet-test: bootstrap
	$(PY) -m pytest -q -m fleet tests/test_e2e_fleet.py
