# supervisor-bluegreen. Quick start on a fresh Debian 12 machine, as root:
#   make demo    # the bundled example app, blue/green behind nginx on 127.0.0.1:8080
#   make test    # the whole suite, with real supervisord, gunicorn, nginx
PY := .venv/bin/python

.PHONY: bootstrap demo demo-stop test bench lint

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	@$(PY) -m example.demo start

demo-stop:
	@if [ -x $(PY) ]; then $(PY) -m example.demo stop; else echo "demo is not running"; fi

test: bootstrap
	.venv/bin/ruff check supervisor_bluegreen tests example bench
	$(PY) -m pytest -q

bench: bootstrap
	$(PY) -m bench.switch
	$(PY) -m bench.deploy

lint: bootstrap
	.venv/bin/ruff check supervisor_bluegreen tests example bench
	.venv/bin/ruff format --check supervisor_bluegreen tests example bench
