# hasim: the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: demo test test-all lint system-deps bench calibrate report notebooks clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-* && touch $@

# The lab (real nginx with its stream module, HAProxy, iproute2, iptables, etcd, keepalived,
# and Go with x/net for the client-go HTTP/2 cell) comes from Debian; install what is
# missing when we are root and have apt-get.
system-deps:
	@missing=""; \
	command -v nginx >/dev/null || missing="$$missing nginx libnginx-mod-stream"; \
	command -v haproxy >/dev/null || missing="$$missing haproxy"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v iptables >/dev/null || missing="$$missing iptables"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	command -v keepalived >/dev/null || missing="$$missing keepalived"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	command -v go >/dev/null || missing="$$missing golang-go"; \
	test -d /usr/share/gocode/src/golang.org/x/net/http2 || missing="$$missing golang-golang-x-net-dev"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "not root or no apt-get: lab tools missing:$$missing"; fi; \
	fi

demo: $(STAMP)
	$(PY) -m hasim.demo

test: $(STAMP) system-deps
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

test-all: $(STAMP) system-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check hasim tests benchmarks
	$(VENV)/bin/mypy hasim

bench: $(STAMP)
	$(PY) benchmarks/run.py

# The lab's full matrix (docs/lab.md): real nginx/HAProxy in a network namespace vs the
# simulator; writes results/calibration/lab.parquet, lab-summary.csv and lab.png.
CALIBRATE_ARGS ?= --matrix full --trials 6 --parallel 2
calibrate: $(STAMP) system-deps
	$(PY) -m hasim.lab calibrate $(CALIBRATE_ARGS) --out results/calibration

# Every notebook of notebooks/ executed (papermill) into results/report/: NAME.html, the
# executed NAME.ipynb and the figures as PNG in figures/NAME/. The lab notebook needs root
# and the lab's packages (system-deps); without them it is skipped with the reason.
report: $(STAMP) system-deps
	$(PY) -m hasim.analysis.report --out results/report

# JupyterLab on the notebooks (installs the `notebooks` extra into .venv once; as root,
# Jupyter wants --allow-root).
notebooks: $(STAMP)
	$(PY) -c "import jupyterlab" 2>/dev/null || $(PY) -m pip install --quiet -e '.[notebooks]'
	$(VENV)/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
