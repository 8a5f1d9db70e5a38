package rootless

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"

	"github.com/sirupsen/logrus"
	"golang.org/x/sys/unix"
)

// ExitError is how Run's command ended when that is not exit status 0, or why it never ran
// with a shell's status for it. A program that stands for the command, as quicgate run does
// (like env or sudo), exits with Code, saying Err first if there is one, or, if Signal is
// not 0, ends by that signal (DieBySignal), Code being the fallback.
type ExitError struct {
	// Code is the exit status as a shell reports it: the command's own, 128+N for signal N
	// (which ended the command, or stopped the setup before it ran), or ExecStatus's 127
	// or 126 for a command that could not be run.
	Code int
	// Signal, if not 0, is the signal that ended the command or stopped the setup.
	Signal syscall.Signal
	// Err is why the command could not be run; nil when its status is all there is to say.
	Err error
}

func (e *ExitError) Error() string {
	if e.Err != nil {
		return e.Err.Error()
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

func (e *ExitError) Unwrap() error { return e.Err }

// commandResult is Run's result once the command has exited and then serve has returned:
// the command's exit status (or the signal that ended it), whatever serve's drain reported
// (serveErr), which is only logged, as the command's result is what the caller waits for.
func commandResult(status int, sig syscall.Signal, waitErr, serveErr error, log *logrus.Entry) error {
	if serveErr != nil {
		log.WithError(serveErr).Warn("the tunnel's drain failed after the command exited; quicgate exits with the command's status")
	}
	switch {
	case waitErr != nil:
		return waitErr
	case status != 0:
		return &ExitError{Code: status, Signal: sig}
	}
	return nil
}

// DieBySignal ends this process by sig, as sudo does when its command was killed by one,
// so that the caller sees the signal and not just 128+N: a shell's loop stops on Ctrl-C,
// and a killed job reads as killed. Call it last, with everything cleaned up. The handler
// is reset to the default with rt_sigaction itself (the Go runtime ignores some signals it
// has no use for, and turns SIGQUIT into a stack dump), and RLIMIT_CORE is set to 0 so
// that no core of this process's is dumped for a core-dumping signal: the command's was.
// It returns if the signal did not end the process; the caller then exits 128+N.
func DieBySignal(sig syscall.Signal) {
	runtime.LockOSThread() // the signal is sent to, and unblocked on, this thread
	_ = unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{})
	if sig != syscall.SIGKILL && sig != syscall.SIGSTOP {
		// An all-zero struct sigaction is SIG_DFL with no flags and an empty mask, whatever
		// the architecture's layout; 8 bytes is the kernel's sigset_t (MIPS's is 16: there
		// the call fails and the caller exits 128+N).
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
