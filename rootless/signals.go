package rootless

import (
	"context"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// relayedSignals are the signals Run passes on to the command; before it runs, any of them
// stops the setup.
var relayedSignals = []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT}

// runSignals owns Run's signals. Until the command starts, the first one stops the setup
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
