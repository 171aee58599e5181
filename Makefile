# natkit: two set-up commands on a fresh machine.
#   make demo   venv + package, then natkit demo: two nodes go direct on the embedded sim backend
#   make test   venv + package + test extras (+ Debian packages when run as root), then the whole suite
# Other targets: make lab (JupyterLab on notebooks/), make notebooks BACKEND=sim|netns|docker (every notebook and
# exercise on one backend, as the suite runs them), make lint, make bench, make clean.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.natkit-installed

# Debian packages the suite drives for real (installed only when run as root on Debian/Ubuntu).
DEB_PACKAGES := graphviz iproute2 nftables iptables tcpdump tshark wireguard-go wireguard-tools \
                coturn stun-client conntrack procps iperf3 iputils-ping \
                docker.io docker-compose debootstrap chromium chromium-driver

.PHONY: demo test lab notebooks lint bench sysdeps venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,notebooks,bench]'
	@touch $@

sysdeps:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:" $$missing; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  fi; \
	else \
	  echo "not root or not Debian: skipping system packages ($(DEB_PACKAGES)); tests that need them will skip"; \
	fi

demo: $(STAMP)
	$(BIN)/natkit demo

test: sysdeps $(STAMP)
	$(BIN)/python -m pytest

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

BACKEND ?= sim
notebooks: sysdeps $(STAMP)
	@case "$(BACKEND)" in sim|netns|docker) ;; *) echo "make notebooks: BACKEND=$(BACKEND): use sim, netns or docker" >&2; exit 2;; esac
	NATKIT_TEST_ALL_BACKENDS=1 $(BIN)/python -m pytest -p no:cacheprovider --durations=0 \
	  tests/notebooks/test_notebooks.py tests/labs/test_exercises.py -k "$(BACKEND)"

lint: $(STAMP)
	$(BIN)/ruff check toolkit tests
	$(BIN)/mypy toolkit
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/natkit bench make-pcap /tmp/natkit-bench.pcap
	$(BIN)/natkit bench decode /tmp/natkit-bench.pcap

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info
