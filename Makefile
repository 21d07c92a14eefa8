# The two commands a new user runs; both go through scripts/panel.sh, which installs what is
# missing and starts what is not running (and stops it again on exit).
.PHONY: run test lint bench

run:
	@bash scripts/panel.sh run

test:
	@bash scripts/panel.sh test $(ARGS)

lint:
	.venv/bin/ruff check . && .venv/bin/mypy controlpanel sandboxes audit teams && .venv/bin/python manage.py check && .venv/bin/python manage.py makemigrations --check --dry-run

bench:
	@bash scripts/panel.sh bench
