package rootless

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// Once the command has exited, its status is run's, whatever the client's drain says
// after it (that is logged).
func TestRunCommandResult(t *testing.T) {
	var logged strings.Builder
	lg := logrus.New()
	lg.SetOutput(&logged)
	log := logrus.NewEntry(lg)
	drainErr := errors.New("ingress: tun: closing the device: bad file descriptor")
	var exit *ExitError
	if err := commandResult(3, 0, nil, drainErr, log); !errors.As(err, &exit) || exit.Code != 3 || exit.Err != nil {
		t.Fatalf("status 3 and a drain error: %v, want exit status 3 and nothing to say", err)
	}
	if !strings.Contains(logged.String(), "bad file descriptor") {
		t.Fatalf("the drain's error was not logged: %q", logged.String())
	}
	if err := commandResult(0, 0, nil, drainErr, log); err != nil {
		t.Fatalf("status 0 and a drain error: %v, want nil", err)
	}
	if err := commandResult(0, 0, nil, nil, log); err != nil {
		t.Fatalf("status 0: %v", err)
	}
}

// What Run settles before it makes anything: a command not found is a shell's 127, said
// with its name, and serve is never called; a serve that fails before Start is Run's error.
func TestRunBeforeTheNamespace(t *testing.T) {
	self := []string{"quicgate", "run"}
	served := false
	err := Run(Config{Args: []string{"no-such-command-here"}, Self: self}, func(context.Context, *Session) error {
		served = true
		return nil
	})
	var exit *ExitError
	if !errors.As(err, &exit) || exit.Code != 127 || exit.Signal != 0 || exit.Err == nil || !strings.Contains(err.Error(), "no-such-command-here") || served {
		t.Fatalf("a missing command: %v (served: %v), want exit status 127 naming it, and no serve", err, served)
	}
	if err := Run(Config{Args: []string{"true"}}, nil); err == nil {
		t.Fatal("a Config without Self: no error")
	}

	failed := errors.New("the tunnel could not start")
	err = Run(Config{Args: []string{"true"}, Self: self}, func(_ context.Context, s *Session) error {
		if s.PID() != 0 {
			t.Errorf("PID before Start: %d", s.PID())
		}
		if err := s.Exec(); err == nil {
			t.Error("Exec before Start: no error")
		}
		return failed
	})
	if !errors.Is(err, failed) {
		t.Fatalf("serve failed before Start: %v, want its error", err)
	}
}

// Until the command starts, the first relayed signal stops the setup (ctx ends) and is
// remembered; once it has started, signals go to the command, never one from the setup.
// (SIGTERM: Go keeps an inherited SIG_IGN only for SIGHUP and SIGINT, so a test run under
// nohup sees it too.)
func TestRunSignals(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := watchSignals(cancel)
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ctx.Done():
	case <-time.After(time.Minute):
		t.Fatal("SIGTERM during the setup did not stop it")
	}
	if got := s.stoppedSetup(); got != syscall.SIGTERM {
		t.Fatalf("stopped by %v, want SIGTERM", got)
	}
	if s.commandStarts() {
		t.Fatal("the command started after a signal stopped the setup")
	}
	s.stop()

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	s = watchSignals(cancel)
	defer s.stop()
	if !s.commandStarts() {
		t.Fatal("the command did not start")
	}
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case sig := <-s.relay:
		if sig != syscall.SIGTERM {
			t.Fatalf("relayed %v, want SIGTERM", sig)
		}
	case <-time.After(time.Minute):
		t.Fatal("SIGTERM to a started command was not relayed")
	}
	if ctx.Err() != nil || s.stoppedSetup() != 0 {
		t.Fatal("a signal to a started command stopped the setup")
	}
}
