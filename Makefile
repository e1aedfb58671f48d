# The two commands of the README: `make run` (install, pull the data, run the pipeline)
# and `make test` (install, run the test suite). Both create .venv on first use.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
# No telemetry from MLflow, DVC or albumentations.
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install run lint test test-fast sample browser postgres system label-studio

install: $(VENV)/.installed node_modules/.installed

# constraints.txt pins every package, so a fresh install gets the versions tested here.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,team]'
	touch $@

# onnxruntime-web for the page's in-browser mode (package.json pins it, package-lock.json
# its files); segflow serve serves it from node_modules. Without npm the page keeps its
# server mode and says why the other is unavailable.
node_modules/.installed: package.json package-lock.json
	@if command -v npm >/dev/null 2>&1; then npm ci --ignore-scripts --no-audit --no-fund && touch $@; \
	else echo "npm is absent: the page's in-browser mode will be unavailable (install Node.js, then make install)"; fi

run: install
	# --allow-missing: the embedded remote holds the sample only; repro rebuilds the outputs.
	$(BIN)/dvc pull --allow-missing
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro
	$(BIN)/segflow summary

# The suite runs on TEST_WORKERS pytest-xdist workers, each process on one thread
# (OMP_NUM_THREADS=1): most of a slow test's time is spent waiting on servers, queues and
# subprocesses, and two trainings with two OpenMP threads each on 2 cores spin against each
# other. tests/conftest.py spreads the slow tests over the workers.
TEST_WORKERS ?= 2
PYTEST := PATH=$(CURDIR)/$(BIN):$$PATH OMP_NUM_THREADS=1 $(BIN)/pytest

# What CI runs (.ci/run): the set-up, lint, the lock check (seconds: a clean clone's dvc
# status must show no stage whose code or params changed since dvc.lock), then every test,
# slow ones included. The set-up's downloads run side by side (-j3: the venv, npm's packages,
# Debian's, Label Studio's; -O keeps each one's output together): on a fresh machine apt and
# npm take their minute or so while pip unpacks on one core.
test:
	@$(MAKE) --no-print-directory -j3 -O install system label-studio
	@$(MAKE) --no-print-directory lint
	$(PYTEST) -q -p no:cacheprovider tests/test_reproducible.py::test_the_committed_lock_matches_the_committed_code
	$(PYTEST) -n $(TEST_WORKERS) --dist worksteal

# The inner loop: lint and the tests not marked slow (the end-to-end runs, the model in a
# fresh virtual environment, the tracking servers).
test-fast: install lint
	$(PYTEST) -n $(TEST_WORKERS) --dist worksteal -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Regenerate the embedded sample: the sample stage of dvc.yaml (then `dvc push` publishes it).
sample: install
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/dvc repro --force sample

# Label Studio from PyPI in a venv of its own, for its tests (tests/label_studio_venv.py; kept
# between runs): built here beside the project's venv, pip on the core the project's pip leaves
# free, not by a test worker; where it fails, its test tries again and says why it is skipped.
label-studio:
	@$(PYTHON) tests/label_studio_venv.py || true

# Debian's packages the tests use, one apt-get after the other (two at once would fail on
# dpkg's lock).
system:
	@$(MAKE) --no-print-directory browser
	@$(MAKE) --no-print-directory postgres

# Debian's Chromium, for the page test (tests/serving/test_page.py, driven by Playwright's Python
# package); skipped where it is already installed. Needs root (CI runs as root); where the
# install fails the page test says it is skipped, and why.
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "could not install Debian's chromium: tests/serving/test_page.py will be skipped"

# Debian's PostgreSQL server binaries, for the team tracking server's tests (tests/test_team.py
# starts its own throwaway cluster; nothing is configured system-wide); skipped where they
# are already installed. Needs root, like browser; where the install fails those tests say
# they are skipped, and why.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) \
		|| echo "could not install Debian's postgresql: tests/test_team.py will be skipped"
