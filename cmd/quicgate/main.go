// Command quicgate carries TCP and UDP flows between two hosts over one QUIC connection.
//
//	quicgate server --listen ADDR --state-dir DIR --authorized-clients FILE --allow RULE...
//	quicgate client --server ADDR --state-dir DIR --pin FP -L [bind:]port:host:hostport...
//	quicgate run --server ADDR --pin FP -- CMD [ARGS...]
//	quicgate fingerprint --state-dir DIR
//	quicgate demo
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/rootless"
)

const usage = `quicgate carries TCP and UDP flows between two hosts over one QUIC connection.

Usage:
  quicgate run         --server ADDR --pin FINGERPRINT [client flags] -- CMD [ARGS ...]
                       (CMD in a namespace of its own, every flow through the tunnel; no root needed)
  quicgate server      --listen ADDR --state-dir DIR --authorized-clients FILE --allow RULE [--allow RULE ...]
  quicgate client      --server ADDR --state-dir DIR --pin FINGERPRINT [-L|-R|-U [bind:]port:host:hostport ...]
                       [-D [bind:]port ...] [--tun NAME --tun-addr CIDR --route CIDR|default ...
                       [--exclude CIDR ...] [--tun-dns IP]]
  quicgate fingerprint --state-dir DIR
  quicgate demo
  quicgate status      --metrics ADDR   (of a running server or client started with --metrics ADDR)
  quicgate version

Run 'quicgate COMMAND -h' for a command's flags.
`

// errUsage marks a command-line mistake: exit status 2, like flag's own errors.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	helpOut = stdout
	// SIGINT and SIGTERM stop the commands that run until stopped. run owns its signals and
	// must see which were ignored when it started, before any Notify (rootless.Run); so
	// does its child, which asks for none.
	ctx := context.Background()
	if args[0] != "run" {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}

	var err error
	switch args[0] {
	case "server":
		err = runServer(ctx, args[1:], stderr)
	case "client":
		err = runClient(ctx, args[1:], stderr)
	case "run":
		err = runRun(args[1:], stderr)
	case "fingerprint":
		err = runFingerprint(args[1:], stdout, stderr)
	case "demo":
		err = runDemo(ctx, args[1:], stdout, stderr)
	case "status":
		err = runStatus(args[1:], stdout, stderr)
	case "version", "--version":
		err = runVersion(args[1:], stdout)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "quicgate: unknown command %q\n%s", args[0], usage)
		return 2
	}
	// run stands for its command, as env or sudo do: the command's exit status, or the
	// signal that ended it, is quicgate's.
	var exit *rootless.ExitError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &exit):
		if exit.Err != nil {
			fmt.Fprintf(stderr, "quicgate %s: %v\n", args[0], exit.Err)
		}
		if exit.Signal != 0 {
			rootless.DieBySignal(exit.Signal) // returns only if the signal did not end this process
		}
		return exit.Code
	case errors.Is(err, errUsage):
		fmt.Fprintf(stderr, "quicgate %s: %v\n", args[0], strings.TrimPrefix(err.Error(), "usage: "))
		return 2
	}
	fmt.Fprintf(stderr, "quicgate %s: %v\n", args[0], err)
	return 1
}

// usageErr wraps a flag mistake so that run exits with status 2.
func usageErr(format string, a ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
}

// helpOut is where -h prints a command's flags: run's stdout.
var helpOut io.Writer = os.Stdout

// badValue matches the flag package's error for a value its parser refused.
var badValue = regexp.MustCompile(`^invalid value "(.*)" for flag -(\S+): parse error$`)

// explainFlagErr replaces the flag package's bare "parse error" for a duration with what a
// duration looks like.
func explainFlagErr(fs *flag.FlagSet, err error) error {
	m := badValue.FindStringSubmatch(err.Error())
	if m == nil {
		return err
	}
	if f := fs.Lookup(m[2]); f != nil {
		if g, ok := f.Value.(flag.Getter); ok && isDuration(g) {
			return fmt.Errorf("invalid value %q for flag -%s: want a duration such as 10s, 1m30s or 2h", m[1], m[2])
		}
	}
	return err
}

// isDuration reports whether a flag holds a time.Duration.
func isDuration(g flag.Getter) bool {
	_, ok := g.Get().(time.Duration)
	return ok
}

// newFlagSet returns a flag set that reports its own parse errors as usage errors with one
// line, rather than printing the whole flag list.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("quicgate "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		// Asked for, so it goes to stdout (and can be piped to a pager), with status 0.
		fs.SetOutput(helpOut)
		fmt.Fprintf(helpOut, "Usage of %s:\n", fs.Name())
		fs.PrintDefaults()
		fs.SetOutput(out)
		return err
	}
	if err != nil {
		return usageErr("%v", explainFlagErr(fs, err))
	}
	if fs.NArg() > 0 {
		return usageErr("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

// logFlags are --log-level and --log-format, shared by the long-running commands.
type logFlags struct {
	level, format string
}

func (l *logFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&l.level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.format, "log-format", "text", "log format: text or json")
}

func (l *logFlags) logger(w io.Writer) (*logrus.Entry, error) {
	lg := logrus.New()
	lg.SetOutput(w)
	lvl, err := logrus.ParseLevel(l.level)
	if err != nil {
		return nil, usageErr("--log-level %q: want debug, info, warn or error", l.level)
	}
	lg.SetLevel(lvl)
	switch l.format {
	case "text":
		lg.SetFormatter(&logrus.TextFormatter{FullTimestamp: true})
	case "json":
		lg.SetFormatter(&logrus.JSONFormatter{})
	default:
		return nil, usageErr("--log-format %q: want text or json", l.format)
	}
	// quic-go reports what it could not tune (UDP buffer sizes) through the standard logger.
	log.SetFlags(0)
	log.SetOutput(lg.WriterLevel(logrus.DebugLevel))
	return logrus.NewEntry(lg), nil
}

// defaultStateDir is $XDG_CONFIG_HOME/quicgate, else ~/.config/quicgate.
func defaultStateDir() string {
	if d := os.Getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "quicgate")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".config", "quicgate")
	}
	return ".quicgate"
}

// multiFlag is a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
