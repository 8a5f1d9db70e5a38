# quicgate — the two commands a newcomer needs are `make run` and `make test`.
GO      ?= go
BIN     ?= bin/quicgate
# Packages whose tests run a second time under the race detector (the relay in flow, the core and the stack).
RACE_PKGS ?= ./flow/ ./quicmux/ ./netstack/ ./ingress/ ./streamlink/ ./httpproxy/
# How long each fuzz target runs in `make test`: a count of executions, not a duration. Go 1.26's
# fuzz coordinator can fail a duration-bounded run with a bare "context deadline exceeded" when
# a starved worker misses the deadline (go.dev/issue/75804, fixed in Go 1.27); a count has no
# deadline to race. 50,000 runs take 5-20 s a target here.
FUZZTIME ?= 50000x

.PHONY: all build install run test check unit race fuzz deps bench bench-quick bench-deps bench-go bench-wan bench-flood clean

all: build

build:
	$(GO) build -buildvcs=auto -o $(BIN) ./cmd/quicgate

## install: the binary to $(DESTDIR)$(PREFIX)/bin (default /usr/local/bin) and the systemd
## units to $(DESTDIR)$(UNITDIR); docs/operations.md, "Install", has the rest.
PREFIX  ?= /usr/local
UNITDIR ?= /etc/systemd/system
install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(PREFIX)/bin/quicgate
	install -D -m 0644 dist/systemd/quicgate-server.service $(DESTDIR)$(UNITDIR)/quicgate-server.service
	install -D -m 0644 dist/systemd/quicgate-client.service $(DESTDIR)$(UNITDIR)/quicgate-client.service

## run: the demo — server and client on loopback with throwaway identities, fetching through the tunnel.
run:
	$(GO) run ./cmd/quicgate demo

## test: everything CI runs (as root, tests that need privileges run too).
test: deps check unit race fuzz

check:
	@fmt=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$fmt" ]; then echo "gofmt would change:"; echo "$$fmt"; exit 1; fi
	$(GO) vet ./...

unit:
	TIMESCALE_FACTOR=4 $(GO) test -count=1 -timeout 15m ./...

race:
	$(GO) test -race -count=1 -timeout 15m $(RACE_PKGS)

# Each fuzz target for a bounded number of runs (and -timeout in case one hangs); the seed
# corpora live in testdata/fuzz.
FUZZ_TARGETS ?= ./quicmux/:FuzzReadRequest ./quicmux/:FuzzParseDatagram ./quicmux/:FuzzParseRule ./quicmux/:FuzzAuthorizedClients ./ingress/:FuzzParseLocalForward ./ingress/:FuzzSOCKSRequest ./ingress/:FuzzSOCKSUDP ./ingress/:FuzzHTTPProxyRequest ./cmd/quicgate/:FuzzConfig
fuzz:
	@for t in $(FUZZ_TARGETS); do \
	  pkg=$${t%%:*}; target=$${t##*:}; \
	  echo "fuzz $$target ($$pkg) for $(FUZZTIME)"; \
	  $(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) -timeout 5m $$pkg || exit 1; \
	done

# What the tests need from the system: curl, iproute2 and ping for the TUN tests in network
# namespaces. Installed only when missing and only as root (CI runs as root).
deps:
	@missing=""; \
	  command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	  command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	  command -v ping >/dev/null 2>&1 || missing="$$missing iputils-ping"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then \
	      echo "installing$$missing"; \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    else \
	      echo "missing$$missing (privileged tests will skip; run as root to install)"; \
	    fi; \
	  fi

## bench: quicgate next to direct TCP, raw quic-go, ssh -L, ssh -D and socat (and TUN mode as root);
## markdown on stdout, JSON and a PNG chart in bench/results/. About 4 minutes.
bench:
	$(GO) run ./bench/cmd/qgbench

bench-quick:
	$(GO) run ./bench/cmd/qgbench -quick

## bench-wan: one TCP flow's ways (direct TCP and ssh -L over cubic and over bbr, quicgate -L,
## -L over the TCP transport and TUN) and a UDP flow's (direct, quicgate -U and TUN, at 50 and 90 % of the link rate)
## across a userspace-emulated WAN link (rate, one-BDP queue, delay, loss) between two
## network namespaces, on six profiles; markdown on stdout, JSON and a PNG chart in
## bench/results/ (wan-*). Needs root. About 23 minutes; WANFLAGS passes qgwan's flags, e.g.
## WANFLAGS="-quick -profiles 100M/40ms/1% -rows ssh-bbr,quicgate-bbr" or, UDP alone,
## WANFLAGS="-rows none -udp direct,quicgate" (see qgwan -h).
WANFLAGS ?=
bench-wan:
	@if [ "$$(id -u)" != 0 ]; then echo "bench-wan needs root (it makes network namespaces and TUN devices and sets sysctls)"; exit 1; fi
	$(GO) run ./bench/cmd/qgwan $(WANFLAGS)

## bench-flood: a quicgate server's RSS under floods (qgflood): Initials from many loopback
## source addresses, spoofed or answering a Retry, and one client opening streams as fast as
## it can, with valid requests or silent; a legitimate client connects every second meanwhile.
## Markdown on stdout; about 2.5 minutes. FLOODFLAGS passes qgflood's flags, e.g.
## FLOODFLAGS="-floods initials -duration 10s -quicgate /tmp/old-quicgate" (see qgflood -h).
FLOODFLAGS ?=
bench-flood:
	$(GO) run ./bench/cmd/qgflood $(FLOODFLAGS)

# The peers the benchmark compares against (rows are skipped without them).
bench-deps:
	@if [ "$$(id -u)" != 0 ]; then echo "bench-deps needs root (apt-get)"; exit 1; fi
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client socat

# Micro-benchmarks of the hot paths.
bench-go:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./quicmux/ ./netstack/

clean:
	rm -rf bin
