package rootless

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/internal/logging"
	"github.com/quicgate/quicgate/tun"
)

// TermGrace is how long a command whose tunnel failed under it gets after SIGTERM before
// SIGKILL.
const TermGrace = 5 * time.Second

// Run runs cfg's command in namespaces of its own for as long as a tunnel serves their TUN
// device, and returns how it ended. It is `quicgate run`'s whole life:
//
//   - Run finds the command (cfg.Path "" is looked up from cfg.Args[0]; one not found or
//     not runnable ends with an *ExitError of status 127 or 126, as a shell's) and the
//     working directory (cfg.Dir "" is this process's), then takes SIGINT, SIGTERM, SIGHUP
//     and SIGQUIT for itself; call it before anything in this process asks for them. A
//     signal this process was started with ignored (nohup's SIGHUP) stays ignored, for it
//     and for the command.
//   - serve is the tunnel. It runs until ctx ends and then drains: it calls s.Start for
//     the namespace's device, serves the device, and calls s.Exec once the tunnel is up,
//     which lets the command run. ctx ends when the command exits, or when one of the four
//     signals arrives before the command has started (the setup stops; the command never
//     runs). Signals that arrive once it has started are passed on to it (Proc.Wait).
//   - If serve fails under a running command, whose network is then gone, the command gets
//     SIGTERM, and SIGKILL after TermGrace; Run returns serve's error.
//
// The result, once the command has exited and serve has returned: nil for exit status 0;
// otherwise an *ExitError with the command's status and the signal that ended it, if one
// did, whatever serve's drain returned (that error is logged, not returned: the command's
// status is what the caller waits for). A signal that stopped the setup is an *ExitError
// with status 128+N and that signal; a failed exec in the namespace one with status 127 or
// 126 (ExecError). Any other error is serve's or the setup's.
func Run(cfg Config, serve func(ctx context.Context, s *Session) error) error {
	if len(cfg.Args) == 0 || len(cfg.Self) == 0 {
		return errors.New("rootless: Config needs Args and Self")
	}
	if cfg.Path == "" {
		path, err := exec.LookPath(cfg.Args[0])
		if err != nil {
			return &ExitError{Code: ExecStatus(err), Err: err}
		}
		cfg.Path = path
	}
	if cfg.Dir == "" {
		cwd, err := os.Getwd()
		if err != nil {
			return fmt.Errorf("working directory: %w", err)
		}
		cfg.Dir = cwd
	}

	// ctx lives as long as the command: it ends when the command exits, or when a signal
	// arrives before it has started. From then on signals are the command's.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := watchSignals(cancel)
	defer sigs.stop()
	s := &Session{cfg: cfg, ctx: ctx, cancel: cancel, sigs: sigs, log: logging.OrDiscard(cfg.Logger)}
	return s.finish(serve(ctx, s))
}

// Session is the command's side of Run, for its serve: Start, then Exec. Its methods are
// called from serve, one at a time, and not after serve has returned.
type Session struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	sigs   *runSignals
	log    *logrus.Entry

	proc *Proc
	// waitDone is closed once the command has exited, with status and waitErr set; nil
	// until Exec has started it.
	waitDone chan struct{}
	status   int
	waitErr  error
}

// Start makes the namespaces and the TUN device in them (package rootless's Start), and
// returns the device, to be served from this process, whose QUIC socket stays on the host's
// network. log, if not nil, is the logger from here on (Config.Logger's place). A refusal
// matches ErrUserNamespaces or ErrTUNAccess, its text naming the setting to change.
func (s *Session) Start(log *logrus.Entry) (*tun.Device, error) {
	if s.proc != nil {
		return nil, errors.New("rootless: Session.Start called twice")
	}
	if log != nil {
		s.log = log
	}
	cfg := s.cfg
	cfg.Logger = s.log
	p, err := Start(s.ctx, cfg)
	if err != nil {
		return nil, err
	}
	s.proc = p
	return tun.FromFD(p.TakeTUN(), s.log)
}

// PID is the command's process ID (the child's, which the command keeps), 0 before Start.
func (s *Session) PID() int {
	if s.proc == nil {
		return 0
	}
	return s.proc.PID()
}

// Exec lets the command run, once the tunnel is up, and logs its PID and how to join its
// namespaces (info: "running the command in its own namespace"). When the command exits, ctx
// ends. If a signal has stopped the setup, it does nothing: ctx has ended already. A failed
// exec is an *ExecError.
func (s *Session) Exec() error {
	if s.proc == nil {
		return errors.New("rootless: Session.Exec before Start")
	}
	if s.waitDone != nil {
		return errors.New("rootless: Session.Exec called twice")
	}
	if !s.sigs.commandStarts() {
		return nil // a signal stopped the setup; Run's result says so
	}
	if err := s.proc.Exec(s.ctx); err != nil {
		return err
	}
	pid := s.proc.PID()
	s.log.WithFields(logrus.Fields{"pid": pid, "command": s.cfg.Args[0], "join": fmt.Sprintf("nsenter --preserve-credentials -U -n -m -t %d", pid)}).Info("running the command in its own namespace")
	s.waitDone = make(chan struct{})
	go func() {
		s.status, s.waitErr = s.proc.Wait(s.sigs.relay)
		close(s.waitDone) // before serve stops, which then knows the command exited first
		s.cancel()
	}()
	return nil
}

// finish is Run's result once serve has returned serveErr.
func (s *Session) finish(serveErr error) error {
	if sig := s.sigs.stoppedSetup(); sig != 0 {
		// The command never ran: Run ends as a program stopped by sig would.
		if s.proc != nil {
			s.proc.Close()
		}
		return &ExitError{Code: 128 + int(sig), Signal: sig}
	}
	if s.proc == nil {
		return serveErr
	}
	if s.waitDone == nil {
		s.proc.Close()
		if serveErr == nil {
			serveErr = errors.New("stopped before the command started")
		}
		if ee := (*ExecError)(nil); errors.As(serveErr, &ee) {
			return &ExitError{Code: ee.Status, Err: serveErr}
		}
		return serveErr
	}
	exited := false
	select {
	case <-s.waitDone:
		exited = true
	default:
	}
	if serveErr != nil && !exited {
		// The tunnel failed under the command: end it, as its network is gone.
		_ = s.proc.Signal(syscall.SIGTERM)
		select {
		case <-s.waitDone:
		case <-time.After(TermGrace):
			_ = s.proc.Signal(syscall.SIGKILL)
		}
		<-s.waitDone
		s.proc.Close()
		return serveErr
	}
	<-s.waitDone
	s.proc.Close()
	return commandResult(s.status, s.proc.ExitSignal(), s.waitErr, serveErr, s.log)
}
