package main

import (
	"context"
	"flag"
	"io"
	"time"

	"github.com/quicgate/quicgate/quicmux"
)

func runServer(ctx context.Context, args []string, stderr io.Writer) error {
	fs := newFlagSet("server", stderr)
	listen := fs.String("listen", "127.0.0.1:4433", "UDP address to listen on")
	stateDir := fs.String("state-dir", defaultStateDir(), "directory holding the server's identity (created on first use)")
	authFile := fs.String("authorized-clients", "", "file of client fingerprints to accept, one a line ('#' comments) (required)")
	var allow multiFlag
	fs.Var(&allow, "allow", "destination the server may dial: CIDR, CIDR:PORT, CIDR:LOW-HIGH or a host name (repeatable; at least one)")
	dialTimeout := fs.Duration("dial-timeout", 10*time.Second, "how long to wait for a destination to answer")
	limits := limitFlags(fs)
	var lf logFlags
	lf.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *authFile == "" {
		return usageErr("--authorized-clients is required: a file of client fingerprints ('quicgate fingerprint' prints one)")
	}
	if len(allow) == 0 {
		return usageErr("no --allow rule: refusing to start a server that may dial nothing (or, worse, anything); add e.g. --allow 127.0.0.1/32")
	}
	rules, err := quicmux.ParseRules(allow)
	if err != nil {
		return usageErr("%v", err)
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	authorized, err := quicmux.LoadAuthorizedClients(*authFile)
	if err != nil {
		return err
	}
	if len(authorized) == 0 {
		log.WithField("file", *authFile).Warn("no authorized clients: every client will be rejected")
	}
	id, err := quicmux.LoadOrCreateIdentity(*stateDir)
	if err != nil {
		return err
	}
	srv, err := quicmux.NewServer(quicmux.ServerConfig{
		Identity:    id,
		Authorized:  func(fp quicmux.Fingerprint) bool { _, ok := authorized[fp]; return ok },
		Policy:      rules,
		DialTimeout: *dialTimeout,
		Limits:      limits(),
		Logger:      log,
	})
	if err != nil {
		return err
	}
	addr, err := srv.Listen(*listen)
	if err != nil {
		return err
	}
	log.WithFields(map[string]any{"addr": addr.String(), "fingerprint": id.Fingerprint.String(), "rules": len(rules), "clients": len(authorized)}).Info("server ready")
	<-ctx.Done()
	log.Info("shutting down")
	return srv.Close()
}

// limitFlags registers the QUIC limits both commands share and returns their getter.
func limitFlags(fs *flag.FlagSet) func() quicmux.Limits {
	var l quicmux.Limits
	fs.Int64Var(&l.MaxStreams, "max-streams", 16384, "most flows open at once on one connection")
	fs.DurationVar(&l.KeepAlive, "keepalive", 15*time.Second, "keepalive period of an idle connection")
	fs.DurationVar(&l.IdleTimeout, "idle-timeout", 60*time.Second, "close a connection silent for this long")
	return func() quicmux.Limits { return l }
}
