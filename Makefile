# maild — set-up and everyday commands. Works on a fresh machine with python3 (3.11+).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= config/maild.example.toml

.PHONY: install run test mutants bench lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

# Create or upgrade the database, then run the daemon in the foreground on the
# embedded defaults: SQLite under var/, SMTP on 127.0.0.1:2525, outgoing mail
# into var/outgoing/new/.
run: install
	$(BIN)/maild --config $(CONFIG) db upgrade
	exec $(BIN)/maild --config $(CONFIG) serve

# The tests mostly wait (on daemons, sockets, fsync): twice as many at once as
# there are cores. TEST_JOBS=0 runs them in this one process.
TEST_JOBS ?= $(shell echo $$(( $$(nproc) * 2 )))
test: install
	$(BIN)/python -m pytest -n $(TEST_JOBS)

# Deliberate bugs (tests/mutants/*.patch), each applied to a temporary copy of
# the checkout; the tests each names must fail. MUTANTS="a b" runs only those.
mutants: install
	$(BIN)/python tests/mutants/run.py $(MUTANTS)

# Each benchmark prints its figures and whether its targets were met; a
# missed target does not stop the others ("-").
bench: install
	-$(BIN)/python bench/run.py
	-$(BIN)/python bench/imap_backlog.py
	-$(BIN)/python bench/triage.py
	-$(BIN)/python bench/recognisers.py
	-$(BIN)/python bench/agents.py
	-$(BIN)/python bench/quotes.py
	-$(BIN)/python bench/smtp_load.py
	-$(BIN)/python bench/idle_connections.py
	-$(BIN)/python bench/archive_cost.py
	-$(BIN)/python bench/similar.py
	-$(BIN)/python bench/hostile.py
	-$(BIN)/python bench/trust.py
	-MAILD_CRASH_MESSAGES=5000 MAILD_CRASH_KILLS=300 $(BIN)/python -m pytest -q -s \
	    tests/integration/test_crash_suite.py -k kill_9

lint: install
	$(BIN)/ruff check maild tests bench
	$(BIN)/ruff format --check maild tests bench
	$(BIN)/lint-imports
	$(BIN)/python tests/lint_waits.py
	$(BIN)/python tests/mutants/run.py --check

clean:
	rm -rf $(VENV) var build *.egg-info .pytest_cache .ruff_cache bench/out
