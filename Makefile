# Two entry points on a fresh Debian machine (Python 3.11 with venv):
#   make demo   create .venv, install, start the local engines, run the main job
#   make test   create .venv, install, start the engines the tests need, run lint + types + tests
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit faults screenshot clean-state

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (apt-get install python3.11 python3.11-venv)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	# CPU build of torch first, pinned, so nothing below pulls a CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/crossfeed demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# The repository root is the package `crossfeed`; mypy sees it through a link named so.
typecheck: $(STAMP)
	mkdir -p .state/mypy && ln -sfn ../.. .state/mypy/crossfeed
	MYPYPATH=.state/mypy $(BIN)/mypy -m crossfeed -m crossfeed.exceptions \
	  -p crossfeed.core -p crossfeed.corpus -p crossfeed.indexer -p crossfeed.encoders -p crossfeed.retrieval -p crossfeed.live -p crossfeed.trends -p crossfeed.train \
	  -p crossfeed.streams -p crossfeed.api -p crossfeed.client -p crossfeed.sources -p crossfeed.ops

unit: $(STAMP)
	$(BIN)/pytest -m "not integration"

test: $(STAMP) lint typecheck
	$(BIN)/pytest -m "not fault"

# Fault runs (minutes): private engines killed and restarted, workers killed mid-stream.
faults: $(STAMP)
	$(BIN)/pytest -m fault -s tests/faults

# The dashboard in Debian's chromium (installed by the browser tests when missing, as root)
# against a private pipeline on the running engines; saves what the page showed.
screenshot: $(STAMP)
	CROSSFEED_SCREENSHOT=$(CURDIR)/docs/dashboard.png $(BIN)/pytest -q -p no:cacheprovider tests/browser

clean-state:
	$(BIN)/crossfeed down || true
	rm -rf .state
