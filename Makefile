# mailwarden — the two commands that matter: `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LISTEN ?= 127.0.0.1:8080
WORKERS ?= 2

.PHONY: serve test test-fast lint typecheck pytest fuzz debian-run debian-test venv demo-users clean bench

# The venv is rebuilt when the dependency pins change. It has every extra: ldap (bonsai) is
# built from source here, with the compiler and headers of packaging/debian-run.txt.
$(BIN)/.installed: pyproject.toml
	@bash scripts/install-debian-packages.sh packaging/debian-run.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,ldap]'
	@touch $@

venv: $(BIN)/.installed

demo-users: $(BIN)/.installed
	$(BIN)/mailwarden users --config examples/site.toml import examples/users.csv --replace

serve: demo-users
	$(BIN)/mailwarden serve --config examples/site.toml --listen $(LISTEN) --workers $(WORKERS) --print-examples

debian-test:
	@bash scripts/install-debian-packages.sh packaging/debian-run.txt packaging/debian-test.txt
	@bash scripts/fetch-sendmail.sh >/dev/null

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(BIN)/.installed
	$(BIN)/mypy

pytest: $(BIN)/.installed debian-test
	$(BIN)/pytest

test: debian-test $(BIN)/.installed lint typecheck pytest

# The quick lane while working: no real daemons (uvicorn, slapd, postgres, redis, postfix, ...)
# and no browser; endpoint behaviour runs in-process (tests/fixtures/inprocess.py).
test-fast: $(BIN)/.installed
	$(BIN)/pytest -m "not slow"

# Property tests with fresh random inputs (`make test` uses fixed ones); repeat it at will.
fuzz: $(BIN)/.installed debian-test
	MAILWARDEN_HYPOTHESIS=fuzz $(BIN)/pytest -q -p no:cacheprovider $$(grep -rl '@given' tests)

bench: $(BIN)/.installed   # bench/autoconfig.sh installs packaging/debian-bench.txt itself
	bash bench/autoconfig.sh
	bash bench/directory.sh
	@bash scripts/install-debian-packages.sh packaging/debian-test.txt   # redis-server
	$(BIN)/python -m bench.guard_sim
	$(BIN)/python -m bench.guard_throughput
	@bash scripts/install-debian-packages.sh packaging/debian-test.txt packaging/debian-bench.txt   # the lab: knot, nginx, dovecot, postfix; the peer: curl, dig, openssl
	$(BIN)/python -m bench.probe
	bash bench/audit.sh   # 100 TLS endpoints audited vs sslyze --certinfo (--with-testssl: testssl.sh too)
	$(BIN)/python -m bench.audit_dns   # the DNS part of an audit of 200 mail domains vs dig -f
	$(BIN)/python -m bench.reputation   # reputation scan of a 2.8-million-line Postfix log vs grep -c

clean:
	rm -rf $(VENV) var build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis
