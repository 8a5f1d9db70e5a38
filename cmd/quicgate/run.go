package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/ingress"
	"github.com/quicgate/quicgate/quicmux"
	"github.com/quicgate/quicgate/rootless"
)

// runRun is `quicgate run [client flags] -- CMD [ARGS...]`: CMD runs in a user and network
// namespace of its own whose only way out is a TUN device this process serves, as TUN
// mode does, over the client's QUIC connection from the host's network. The lifecycle
// (the child, the device's hand-over, signals, the exit status, the drain) is
// rootless.Run's; run parses the flags and serves the device with the client.
func runRun(args []string, stderr io.Writer) error {
	if rootless.IsChild() {
		return &rootless.ExitError{Code: rootless.ChildMain()}
	}
	flagArgs, command := args, []string(nil)
	if i := slices.Index(args, "--"); i >= 0 {
		flagArgs, command = args[:i], args[i+1:]
	}
	fs := newFlagSet("run", stderr)
	cf := registerClientFlags(fs)
	// The terminal is the command's: quicgate says only what goes wrong unless asked, and
	// once the command has exited its flows are closing, so the drain is short.
	setDefault(fs, "log-level", "warn")
	setDefault(fs, "drain-timeout", "1s")
	err := parseWithConfig(fs, flagArgs, &cf.common.config)
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	if len(command) == 0 {
		return usageErr("give the command after --: quicgate run [client flags] -- CMD [ARGS...]")
	}
	if err != nil {
		return err
	}
	spec, err := cf.check()
	if err != nil {
		return err
	}
	if cf.tun.hostRouting() {
		// Name what the user gave: the flags, or the settings of a config file.
		clFS := newFlagSet("run", io.Discard)
		cl := registerClientFlags(clFS)
		_ = parseFlags(clFS, flagArgs)
		if cl.tun.hostRouting() {
			return usageErr("--tun, --route, --exclude and --route-table are the client's: run makes its own device (%s) inside the command's namespace, with default routes", rootless.DefaultTUN)
		}
		return usageErr("%s sets tun or route, which are the client's: run makes its own device (%s) inside the command's namespace, with default routes; give run a config file without them", cf.common.config, rootless.DefaultTUN)
	}
	addrs, err := cf.tun.device()
	if err != nil {
		return err
	}
	// The namespace routes everything into its device: --tun-dns need only not be one of
	// the device's own addresses.
	dns := rootless.DefaultDNS
	if cf.tun.dns != "" {
		own := addrs
		if len(own) == 0 {
			own = rootless.DefaultAddrs
		}
		if dns, err = cf.tun.dnsAddr(own, rootless.DefaultRoutes); err != nil {
			return err
		}
	}
	cfg := rootless.Config{
		Args: command, Env: os.Environ(),
		Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
		Self: []string{os.Args[0], "run"},
		MTU:  cf.tun.mtu, Addrs: addrs, Resolv: rootless.ResolvConf(dns),
	}
	// The client lives as long as the command (ctx), and serves the namespace's device.
	return rootless.Run(cfg, func(ctx context.Context, s *rootless.Session) error {
		return serveClient(ctx, spec, stderr, clientHooks{
			ingress: func(client *quicmux.Client, opt ingress.Options, log *logrus.Entry) (ingress.Ingress, error) {
				dev, err := s.Start(log)
				if err != nil {
					return nil, err
				}
				return ingress.AdoptTUN(dev, fmt.Sprintf("run %d", s.PID()), cf.tun.mtu, dns, client, opt)
			},
			connected: s.Exec,
		})
	})
}

// setDefault changes a registered flag's default value (and its value, not yet parsed).
func setDefault(fs *flag.FlagSet, name, value string) {
	f := fs.Lookup(name)
	_ = f.Value.Set(value)
	f.DefValue = value
}
