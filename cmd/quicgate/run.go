package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"

	"github.com/quicgate/quicgate/ingress"
	"github.com/quicgate/quicgate/quicmux"
	"github.com/quicgate/quicgate/rootless"
	"github.com/quicgate/quicgate/tun"
)

// exitError leaves with code, saying err first if there is one: the command's own exit
// status (nothing to say), or a command that could not be run (127 or 126, as a shell
// does: rootless.ExecStatus).
type exitError struct {
	code int
	err  error
	// signal, if not 0, is the signal that ended the command (or stopped run before it
	// started): run ends by it as well (dieBySignal), code being the fallback.
	signal syscall.Signal
}

func (e *exitError) Error() string {
	if e.err != nil {
		return e.err.Error()
	}
	return fmt.Sprintf("exit status %d", e.code)
}

// termGrace is how long a command whose tunnel failed gets after SIGTERM before SIGKILL.
const termGrace = 5 * time.Second

// runRun is `quicgate run [client flags] -- CMD [ARGS...]`: CMD runs in a user and network
// namespace of its own whose only way out is a TUN device this process serves, as TUN
// mode does, over the client's QUIC connection from the host's network (package rootless).
// It handles its own signals (runSignals).
func runRun(args []string, stderr io.Writer) error {
	if rootless.IsChild() {
		return &exitError{code: rootless.ChildMain()}
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
	path, err := exec.LookPath(command[0])
	if err != nil {
		return &exitError{code: rootless.ExecStatus(err), err: err}
	}
	cwd, err := os.Getwd()
	if err != nil {
		return fmt.Errorf("working directory: %w", err)
	}

	// The client lives as long as the command: runCtx ends when it exits, or when a signal
	// arrives before it has started. From then on signals are the command's.
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	sigs := watchSignals(cancelRun)
	defer sigs.stop()

	var (
		proc     *rootless.Proc
		runLog   *logrus.Entry
		waitDone chan struct{}
		status   int
		waitErr  error
	)
	hooks := clientHooks{
		ingress: func(client *quicmux.Client, opt ingress.Options, log *logrus.Entry) (ingress.Ingress, error) {
			p, err := rootless.Start(runCtx, rootless.Config{
				Path: path, Args: command, Env: os.Environ(), Dir: cwd,
				Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
				Self: []string{os.Args[0], "run"},
				MTU:  cf.tun.mtu, Addrs: addrs, Resolv: rootless.ResolvConf(dns),
				Logger: log,
			})
			if err != nil {
				return nil, err
			}
			proc = p
			dev, err := tun.FromFD(p.TakeTUN(), log)
			if err != nil {
				return nil, err
			}
			return ingress.AdoptTUN(dev, fmt.Sprintf("run %d", p.PID()), cf.tun.mtu, dns, client, opt)
		},
		connected: func(log *logrus.Entry) error {
			if !sigs.commandStarts() {
				return nil // a signal stopped the setup; see below
			}
			if err := proc.Exec(runCtx); err != nil {
				return err
			}
			log.WithFields(logrus.Fields{"pid": proc.PID(), "command": command[0], "join": fmt.Sprintf("nsenter --preserve-credentials -U -n -m -t %d", proc.PID())}).Info("running the command in its own namespace")
			runLog = log
			waitDone = make(chan struct{})
			go func() {
				status, waitErr = proc.Wait(sigs.relay)
				close(waitDone) // before the client stops, which then knows the command exited first
				cancelRun()
			}()
			return nil
		},
	}
	err = serveClient(runCtx, spec, stderr, hooks)
	if sig := sigs.stoppedSetup(); sig != 0 {
		// The command never ran: quicgate ends as a program stopped by sig would.
		if proc != nil {
			proc.Close()
		}
		return &exitError{code: 128 + int(sig), signal: sig}
	}
	if proc == nil {
		return err
	}
	if waitDone == nil {
		proc.Close()
		if err == nil {
			err = errors.New("stopped before the command started")
		}
		if ee := (*rootless.ExecError)(nil); errors.As(err, &ee) {
			return &exitError{code: ee.Status, err: err}
		}
		return err
	}
	exited := false
	select {
	case <-waitDone:
		exited = true
	default:
	}
	if err != nil && !exited {
		// The tunnel failed under the command: end it, as its network is gone.
		_ = proc.Signal(syscall.SIGTERM)
		select {
		case <-waitDone:
		case <-time.After(termGrace):
			_ = proc.Signal(syscall.SIGKILL)
		}
		<-waitDone
		proc.Close()
		return err
	}
	<-waitDone
	proc.Close()
	return commandResult(status, proc.ExitSignal(), waitErr, err, runLog)
}

// commandResult is run's result once the command has exited and then the client has
// stopped: the command's exit status (or the signal that ended it), whatever the client's
// drain reported (serveErr), which is only logged, as the command's result is what the
// caller waits for.
func commandResult(status int, sig syscall.Signal, waitErr, serveErr error, log *logrus.Entry) error {
	if serveErr != nil {
		log.WithError(serveErr).Warn("the tunnel's drain failed after the command exited; quicgate exits with the command's status")
	}
	switch {
	case waitErr != nil:
		return waitErr
	case status != 0:
		return &exitError{code: status, signal: sig}
	}
	return nil
}

// dieBySignal ends this process by sig, as sudo does when its command was killed by one,
// so that the caller sees the signal and not just 128+N: a shell's loop stops on Ctrl-C,
// and a killed job reads as killed. Call it last, with everything cleaned up. The handler
// is reset to the default with rt_sigaction itself (the Go runtime ignores some signals it
// has no use for, and turns SIGQUIT into a stack dump), and RLIMIT_CORE is set to 0 so
// that no core of quicgate's is dumped for a core-dumping signal: the command's was. It
// returns if the signal did not end the process; the caller then exits 128+N.
func dieBySignal(sig syscall.Signal) {
	runtime.LockOSThread() // the signal is sent to, and unblocked on, this thread
	_ = unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
	if sig != syscall.SIGKILL && sig != syscall.SIGSTOP {
		// An all-zero struct sigaction is SIG_DFL with no flags and an empty mask, whatever
		// the architecture's layout; 8 bytes is the kernel's sigset_t (MIPS's is 16: there
		// the call fails and run exits 128+N).
		var act [8]uint64
		if _, _, e := unix.RawSyscall6(unix.SYS_RT_SIGACTION, uintptr(sig), uintptr(unsafe.Pointer(&act)), 0, 8, 0, 0); e != 0 {
			return
		}
	}
	var set unix.Sigset_t
	bit := uint(sig - 1)
	width := uint(unsafe.Sizeof(set.Val[0])) * 8
	set.Val[bit/width] |= 1 << (bit % width)
	_ = unix.PthreadSigmask(unix.SIG_UNBLOCK, &set, nil)
	_ = unix.Tgkill(unix.Getpid(), unix.Gettid(), sig)
}

// relayedSignals are the signals run passes on to the command; before it runs, any of them
// stops the setup.
var relayedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

// runSignals owns run's signals. Until the command starts, the first one stops the setup
// and is remembered (it decides the exit status); after that they go to relay, for
// Proc.Wait, so a signal that arrived during the setup is never replayed to the command.
type runSignals struct {
	in     chan os.Signal
	relay  chan os.Signal
	done   chan struct{}
	cancel context.CancelFunc

	mu      sync.Mutex
	started bool
	stopped syscall.Signal // the signal that stopped the setup, 0 if none
}

// watchSignals starts receiving relayedSignals but the ones this process was started with
// ignored (nohup's SIGHUP, the SIGINT of a shell's background job): those it leaves
// ignored, neither stopping the setup nor relaying them, so that the child and the command
// inherit SIG_IGN, as with `nohup env CMD`. Call it before anything in this process asks
// for those signals (a Notify installs a handler, which the command would get back as
// SIG_DFL). Go keeps an inherited SIG_IGN only for SIGHUP and SIGINT (os/signal): an
// ignored SIGTERM or SIGQUIT is not seen here and is relayed. cancel stops the setup.
func watchSignals(cancel context.CancelFunc) *runSignals {
	s := &runSignals{in: make(chan os.Signal, 8), relay: make(chan os.Signal, 8), done: make(chan struct{}), cancel: cancel}
	var watched []os.Signal
	for _, sig := range relayedSignals {
		if !signal.Ignored(sig) {
			watched = append(watched, sig)
		}
	}
	if len(watched) > 0 { // Notify with none would mean all
		signal.Notify(s.in, watched...)
	}
	go s.loop()
	return s
}

func (s *runSignals) loop() {
	for {
		select {
		case sig := <-s.in:
			s.mu.Lock()
			started := s.started
			if !started && s.stopped == 0 {
				s.stopped = sig.(syscall.Signal)
				s.cancel() // under the lock: commandStarts sees either the signal or nothing
			}
			s.mu.Unlock()
			if started {
				select {
				case s.relay <- sig:
				case <-s.done:
					return
				}
			}
		case <-s.done:
			return
		}
	}
}

// commandStarts marks the command as started, unless a signal has stopped the setup.
func (s *runSignals) commandStarts() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped != 0 {
		return false
	}
	s.started = true
	return true
}

// stoppedSetup is the signal that stopped the setup before the command started, or 0.
func (s *runSignals) stoppedSetup() syscall.Signal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// stop stops receiving signals.
func (s *runSignals) stop() {
	signal.Stop(s.in)
	close(s.done)
}

// setDefault changes a registered flag's default value (and its value, not yet parsed).
func setDefault(fs *flag.FlagSet, name, value string) {
	f := fs.Lookup(name)
	_ = f.Value.Set(value)
	f.DefValue = value
}
