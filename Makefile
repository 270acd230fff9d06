# The README's commands. `make run` starts everything; `make test` proves it.
.PHONY: install run test test-heavy lint format bench

# uv when installed, else the one `make install` puts next to python3.
UV = $(shell command -v uv || echo python3 -m uv)

install:
	@command -v uv >/dev/null || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen

.env:
	python3 bin/make-env

run: install .env
	$(UV) run python manage.py preflight
	$(UV) run python manage.py migrate --noinput
	$(UV) run python manage.py sync_schedule
	$(UV) run honcho start

# The heavy proofs (a million rows, a copy of the project, make bench) take as long as the rest
# together: `make test` leaves them to `make test-heavy`, and CI runs both.
test: install
	$(UV) run pytest -m "not heavy" $(PYTEST_ARGS)

test-heavy: install
	$(UV) run pytest -m heavy $(PYTEST_ARGS)

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy .
	$(UV) run lint-imports

format: install
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

bench: install
	$(UV) run python -m tests.bench
