package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/quicmux"
)

// serverFlags are the server's own flags.
type serverFlags struct {
	listen, authFile           *string
	listenTCP                  *string
	allow, allowListen         multiFlag
	dialTimeout, headerTimeout *time.Duration
	maxHeader, maxDials        *int
	maxConnsPerClient          *int
	maxFlowsPerClient          *int
	udpIdle                    *time.Duration
	maxHandshakes, retryHs     *int
	retry                      *bool
	watch                      *time.Duration
	common                     *common
}

// parseServerFlags parses the server's command line and config file.
func parseServerFlags(args []string, stderr io.Writer) (*serverFlags, error) {
	fs := newFlagSet("server", stderr)
	f := &serverFlags{}
	f.listen = fs.String("listen", "127.0.0.1:4433", "address to listen on: UDP for QUIC, and TCP for the fallback transport unless --listen-tcp says otherwise")
	f.listenTCP = fs.String("listen-tcp", "", "TCP address of the fallback transport (TLS; for clients whose networks block UDP or allow only an HTTP proxy); default: --listen's; 'off': none")
	f.authFile = fs.String("authorized-clients", "", "file of client fingerprints to accept, one a line ('#' comments) (required; reread when it changes, and on SIGHUP)")
	fs.Var(&f.allow, "allow", "destination the server may dial: CIDR, CIDR:PORT, CIDR:LOW-HIGH or a host name (repeatable; at least one; the config file's are reread when it changes, and on SIGHUP)")
	fs.Var(&f.allowListen, "allow-listen", "where clients may have the server listen for their reverse forwards (-R): ADDR:PORT, ADDR:LOW-HIGH or CIDR:PORTS (repeatable; none by default; permitlisten= in the authorized-clients file allows one client more)")
	f.dialTimeout = fs.Duration("dial-timeout", 10*time.Second, "how long to wait for a destination to answer")
	f.headerTimeout = fs.Duration("header-timeout", 10*time.Second, "how long a new stream may take to send its header")
	f.maxHeader = fs.Int("max-header-bytes", quicmux.MaxHeaderLen, "largest request header accepted (at most 263)")
	f.maxDials = fs.Int("max-pending-dials", 1024, "requests resolving or connecting at once (a TCP dial, a UDP socket, a lookup, an echo, a listen), over all clients")
	f.maxConnsPerClient = fs.Int("max-conns-per-client", quicmux.DefaultMaxConnsPerClient, "connections one client identity may have open at once (a client keeps one)")
	f.maxFlowsPerClient = fs.Int("max-flows-per-client", 0, "streams one client identity may have open at once over all its connections (0: --max-streams); bounds what one client can make the server hold, about 14 KiB a stream")
	f.udpIdle = fs.Duration("udp-idle-timeout", 0, "end a UDP flow that carried no packet either way for this long (0: 2m, and 15s for DNS, port 53)")
	f.maxHandshakes = fs.Int("max-handshakes", quicmux.DefaultMaxHandshakes, "QUIC handshakes in progress at once, over all clients; beyond it new connections are refused until one completes or times out")
	f.retryHs = fs.Int("retry-handshakes", quicmux.DefaultRetryHandshakes, "from this many handshakes in progress on, a new client must prove its address with a QUIC Retry first (so spoofed Initials hold no state); -1: only with --retry")
	f.watch = fs.Duration("watch-interval", time.Second, "how often to check the authorized-clients and config files for changes, which reload them as SIGHUP does (0: only SIGHUP)")
	f.retry = fs.Bool("retry", false, "make clients prove their address with a QUIC Retry first (for servers exposed to the Internet)")
	f.common = commonFlags(fs, "server", serverProcs(runtime.NumCPU()), "The server serves many connections at once and uses every core, except on hosts of 2 cores or fewer: there one thread, leaving the other core to the kernel's share of the packets, moved 10-25% more (docs/performance.md).")
	if err := parseWithConfig(fs, args, &f.common.config); err != nil {
		return nil, err
	}
	return f, nil
}

// loadAccess reads the allow rules and the authorized clients as the flags and the config
// file give them now: what the server starts with and what a reload reads.
func (f *serverFlags) loadAccess() (*quicmux.Access, error) {
	if *f.authFile == "" {
		return nil, usageErr("--authorized-clients is required: a file of client fingerprints ('quicgate fingerprint' prints one)")
	}
	if len(f.allow) == 0 {
		return nil, usageErr("no --allow rule: refusing to start a server that may dial nothing (or, worse, anything); add e.g. --allow 127.0.0.1/32")
	}
	rules, err := quicmux.ParseRules(f.allow)
	if err != nil {
		return nil, usageErr("%v", err)
	}
	listen, err := quicmux.ParseListenRules(f.allowListen)
	if err != nil {
		return nil, usageErr("--allow-listen: %v", err)
	}
	authorized, err := quicmux.LoadAuthorizedClients(*f.authFile)
	if err != nil {
		return nil, err
	}
	return &quicmux.Access{Rules: rules, Listen: listen, Authorized: authorized}, nil
}

func runServer(ctx context.Context, args []string, stderr io.Writer) error {
	f, err := parseServerFlags(args, stderr)
	if err != nil {
		return err
	}
	acc, err := f.loadAccess()
	if err != nil {
		return err
	}
	if *f.maxHeader < quicmux.MinTCPHeaderLen || *f.maxHeader > quicmux.MaxHeaderLen {
		return usageErr("--max-header-bytes %d: want %d (IPv6 targets) to %d (any host name)", *f.maxHeader, quicmux.MinTCPHeaderLen, quicmux.MaxHeaderLen)
	}
	if *f.maxDials < 1 {
		return usageErr("--max-pending-dials %d: want at least 1", *f.maxDials)
	}
	if *f.maxConnsPerClient < 1 {
		return usageErr("--max-conns-per-client %d: want at least 1", *f.maxConnsPerClient)
	}
	if *f.maxFlowsPerClient < 0 {
		return usageErr("--max-flows-per-client %d: want at least 1, or 0 for --max-streams", *f.maxFlowsPerClient)
	}
	if *f.udpIdle < 0 {
		return usageErr("--udp-idle-timeout %s: want a positive duration, or 0 for the defaults", *f.udpIdle)
	}
	if *f.maxHandshakes < 1 {
		return usageErr("--max-handshakes %d: want at least 1", *f.maxHandshakes)
	}
	if *f.retryHs == 0 || *f.retryHs < -1 {
		return usageErr("--retry-handshakes %d: want at least 1, or -1 for a Retry only with --retry", *f.retryHs)
	}
	if err := positive(map[string]time.Duration{"--dial-timeout": *f.dialTimeout, "--header-timeout": *f.headerTimeout}); err != nil {
		return err
	}
	if *f.watch < 0 {
		return usageErr("--watch-interval %s: want a positive duration, or 0 to reload on SIGHUP only", *f.watch)
	}
	env, err := f.common.setup("server", stderr)
	if err != nil {
		return err
	}
	defer env.obs.close()
	log, id := env.log, env.id
	if len(acc.Authorized) == 0 {
		log.WithField("file", *f.authFile).Warn("no authorized clients: every client will be rejected")
	}
	live := quicmux.NewLiveAccess(acc)
	srv, err := quicmux.NewServer(quicmux.ServerConfig{
		Identity:          id,
		Authorized:        live.Authorized,
		Policy:            live,
		ListenPolicy:      live.ListenAllowed,
		DialTimeout:       *f.dialTimeout,
		HeaderTimeout:     *f.headerTimeout,
		MaxHeaderBytes:    *f.maxHeader,
		MaxPendingDials:   *f.maxDials,
		MaxConnsPerClient: *f.maxConnsPerClient,
		MaxFlowsPerClient: *f.maxFlowsPerClient,
		MaxHandshakes:     *f.maxHandshakes,
		RetryHandshakes:   *f.retryHs,
		FlowIdleTimeout:   f.common.flowIdle,
		UDPIdleTimeout:    *f.udpIdle,
		TCPKeepAlive:      f.common.tcpKeepAlive(),
		Retry:             *f.retry,
		Limits:            env.limits,
		Metrics:           env.obs.metrics,
		Logger:            log,
	})
	if err != nil {
		return err
	}
	env.obs.register(srv.HandshakeCollector())
	addr, err := srv.Listen(*f.listen)
	if err != nil {
		return err
	}
	tcpAddr := addr.String() // the same port, when --listen asked for port 0
	switch *f.listenTCP {
	case "off":
		tcpAddr = ""
	case "":
		if host, _, err := net.SplitHostPort(*f.listen); err == nil {
			_, port, _ := net.SplitHostPort(addr.String())
			tcpAddr = net.JoinHostPort(host, port)
		}
	default:
		tcpAddr = *f.listenTCP
	}
	var tcpBound net.Addr
	if tcpAddr != "" {
		if tcpBound, err = srv.ListenTCP(tcpAddr); err != nil && *f.listenTCP == "" && strings.HasSuffix(*f.listen, ":0") {
			// --listen asked for any port: the TCP transport takes any port too when UDP's
			// number is taken on TCP ("server ready" says which).
			host, _, _ := net.SplitHostPort(tcpAddr)
			tcpBound, err = srv.ListenTCP(net.JoinHostPort(host, "0"))
		}
		switch {
		case err != nil && *f.listenTCP == "":
			// The default: a server whose TCP port another program holds (a web server on
			// 443) still serves QUIC, as it did before the TCP transport existed.
			log.WithError(err).WithField("addr", tcpAddr).Warn("cannot serve the TCP transport on --listen's address; serving QUIC alone (give --listen-tcp ADDR, or --listen-tcp off to say so)")
		case err != nil:
			_ = srv.Close()
			return fmt.Errorf("--listen-tcp %s: %w (give --listen-tcp off to serve QUIC alone)", tcpAddr, err)
		}
	}
	// SIGHUP is caught before the server says it is ready: from then on it reloads.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	ready := logrus.Fields{"addr": addr.String(), "fingerprint": id.Fingerprint.String(), "rules": len(acc.Rules), "clients": len(acc.Authorized)}
	if tcpBound != nil {
		ready["tcp_addr"] = tcpBound.String()
	}
	log.WithFields(ready).Info("server ready")
	// An edit of the files, or SIGHUP, rereads them (quicmux.Reloader): the flags and the
	// config file are parsed anew each time, so the config file's allow rules, and the
	// authorized-clients file it may name, are reread with the file.
	reloader, err := quicmux.NewReloader(srv, live, quicmux.ReloadConfig{
		Files: func() ([]string, error) {
			f, err := parseServerFlags(args, io.Discard)
			if err != nil {
				return nil, err
			}
			return f.accessFiles(), nil
		},
		Load: func() (*quicmux.Access, error) {
			f, err := parseServerFlags(args, io.Discard)
			if err != nil {
				return nil, err
			}
			return f.loadAccess()
		},
		Interval: *f.watch,
		Logger:   log,
	})
	if err != nil {
		return err
	}
	reloader.Run(ctx, hup)
	log.WithField("drain_timeout", f.common.drain.String()).Info("shutting down: draining open flows")
	dctx, cancel := context.WithTimeout(context.Background(), f.common.drain)
	defer cancel()
	_ = srv.Shutdown(dctx) // a drain that times out resets the rest: still a clean exit
	log.Info("stopped")
	return nil
}

// accessFiles are the files loadAccess reads: the authorized clients and the config file.
func (f *serverFlags) accessFiles() []string { return []string{*f.authFile, f.common.config} }

// common are the flags that server and client share.
type common struct {
	config     string
	stateDir   string
	procs      int
	l          quicmux.Limits
	congestion string
	flowIdle   time.Duration
	keepalive  time.Duration
	drain      time.Duration
	log        logFlags
	observe    observeFlags
}

// serverProcs is the server's default --procs on a host of cpus cores (0: all of them).
func serverProcs(cpus int) int {
	if cpus <= 2 {
		return 1
	}
	return 0
}

// commonFlags registers the shared flags; side names the command in help texts, and procs is
// the command's default for --procs.
func commonFlags(fs *flag.FlagSet, side string, procs int, procsWhy string) *common {
	c := &common{}
	fs.StringVar(&c.config, "config", "", "YAML file of settings named as these flags (the command line wins; 'forward' is an alias of L)")
	fs.StringVar(&c.stateDir, "state-dir", defaultStateDir(), "directory holding the "+side+"'s identity (created on first use)")
	fs.IntVar(&c.procs, "procs", procs, "CPU threads for Go code (GOMAXPROCS; 0: one per core). "+procsWhy)
	fs.Int64Var(&c.l.MaxStreams, "max-streams", 16384, "most flows open at once on one connection")
	fs.DurationVar(&c.l.KeepAlive, "keepalive", 0, "keepalive period of an idle connection (default: client 1s, which also finds a restarted server within a second; server 15s)")
	fs.DurationVar(&c.l.IdleTimeout, "idle-timeout", 60*time.Second, "close a QUIC connection silent for this long")
	fs.StringVar(&c.congestion, "congestion", string(quicmux.CongestionBBR), "congestion control for what this end sends: bbr (keeps its rate through random loss) or cubic; each end chooses its own")
	fs.DurationVar(&c.flowIdle, "flow-idle-timeout", flow.DefaultIdleTimeout, "reset a flow that moved no byte either way for this long (0: never); the default is the shortest a NAT may use (RFC 5382)")
	fs.DurationVar(&c.keepalive, "tcp-keepalive", flow.DefaultTCPKeepAlive, "probe a TCP end of a flow (an app's socket, a dialed destination) silent for this long; one whose host vanished is reset within twice this (0: no probes)")
	fs.DurationVar(&c.drain, "drain-timeout", 10*time.Second, "on SIGTERM or SIGINT, let open flows finish for this long before resetting them")
	c.log.register(fs)
	c.observe.register(fs)
	return c
}

// runEnv is what both commands set up from the shared flags once they are parsed.
type runEnv struct {
	limits quicmux.Limits
	log    *logrus.Entry
	id     *quicmux.Identity
	obs    *observer
}

// setup checks the shared flags, sets GOMAXPROCS, makes the logger, loads (or creates) the
// identity and starts the metrics and pprof servers; the caller closes env.obs.
func (c *common) setup(side string, stderr io.Writer) (*runEnv, error) {
	if c.procs < 0 {
		return nil, usageErr("--procs %d: want 0 (one per core) or more", c.procs)
	}
	limits, err := c.limits()
	if err != nil {
		return nil, err
	}
	log, err := c.log.logger(stderr)
	if err != nil {
		return nil, err
	}
	if c.procs > 0 {
		runtime.GOMAXPROCS(c.procs)
	}
	existed := quicmux.HasIdentity(c.stateDir)
	id, err := quicmux.LoadOrCreateIdentity(c.stateDir)
	if err != nil {
		return nil, err
	}
	if !existed {
		// A mistyped --state-dir must not pass for the identity the peer knows.
		log.WithFields(logrus.Fields{"state_dir": c.stateDir, "fingerprint": id.Fingerprint.String()}).Warn("no identity in the state directory: created a new one, which the other side does not know yet; if you meant an existing identity, check --state-dir")
	}
	obs, err := c.observe.start(side, log)
	if err != nil {
		return nil, err
	}
	return &runEnv{limits: limits, log: log, id: id, obs: obs}, nil
}

func (c *common) limits() (quicmux.Limits, error) {
	if c.l.MaxStreams < 1 {
		return c.l, usageErr("--max-streams %d: want at least 1", c.l.MaxStreams)
	}
	if c.l.KeepAlive < 0 || c.l.KeepAlive >= c.l.IdleTimeout {
		return c.l, usageErr("--keepalive %s must be shorter than --idle-timeout %s", c.l.KeepAlive, c.l.IdleTimeout)
	}
	if err := positive(map[string]time.Duration{"--idle-timeout": c.l.IdleTimeout}); err != nil {
		return c.l, err
	}
	cc, err := quicmux.ParseCongestion(c.congestion)
	if err != nil {
		return c.l, usageErr("--congestion %q: want bbr or cubic", c.congestion)
	}
	c.l.Congestion = cc
	if c.flowIdle < 0 || c.drain < 0 || c.keepalive < 0 {
		return c.l, usageErr("--flow-idle-timeout, --tcp-keepalive and --drain-timeout cannot be negative")
	}
	if c.keepalive > 0 && c.keepalive < time.Second {
		return c.l, usageErr("--tcp-keepalive %s: want at least 1s (or 0 for no probes)", c.keepalive)
	}
	return c.l, nil
}

// tcpKeepAlive is --tcp-keepalive as quicmux takes it: 0 (no probes) becomes negative.
func (c *common) tcpKeepAlive() time.Duration {
	if c.keepalive == 0 {
		return -1
	}
	return c.keepalive
}

func positive(durations map[string]time.Duration) error {
	for name, d := range durations {
		if d <= 0 {
			return usageErr("%s %s: want a positive duration", name, d)
		}
	}
	return nil
}
