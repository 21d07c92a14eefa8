# The two commands a new user runs, and the fast one for your own loop. All go through
# scripts/panel.sh, which installs what is missing and starts what is not running.
.PHONY: run test check lint bench agent

run:    ## set up and serve the panel on http://127.0.0.1:8000 (Ctrl-C stops it; sandboxes keep running)
	@bash scripts/panel.sh run

agent:  ## on a host joined with `manage.py host join TOKEN`: run its agent (workers on its own queues, events watcher, heartbeat)
	@bash scripts/panel.sh agent

test:   ## lint, then every test (Docker, Redis, Celery, Chromium for real), on SQLite then PostgreSQL
	@bash scripts/panel.sh test $(ARGS)

check:  ## lint, then the tests that need no Docker, Redis or browser
	@bash scripts/panel.sh check $(ARGS)

lint:   ## ruff (lint and format), mypy, manage.py check, makemigrations --check
	@bash scripts/panel.sh lint

bench:  ## the benchmarks in bench/, each ending with one JSON line (ARGS="bench/pages.py --seconds 10": one of them)
	@bash scripts/panel.sh bench $(ARGS)
