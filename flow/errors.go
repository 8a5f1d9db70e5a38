package flow

import (
	"context"
	"errors"
	"syscall"
)

// Sentinel errors for how a flow ended.
var (
	// ErrReset: the other end of the flow reset it.
	ErrReset = errors.New("flow: reset by peer")
	// ErrIdle: the flow moved no byte for longer than its idle timeout and was reset.
	ErrIdle = errors.New("flow: idle timeout")
	// ErrRejected: the tunnel's far end would not carry the flow. No error is this value
	// itself: an error says it by matching it with errors.Is, as quicmux's *StatusError (a
	// status other than ok from the server) does whatever its status.
	ErrRejected = errors.New("flow: rejected")
)

// Result names how a flow ended, for logs and metrics: ok, rejected, idle, refused (a UDP
// destination's port unreachable), reset, shutdown or error.
func Result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrRejected):
		return "rejected" // a -L flow whose bytes went out before the server's answer
	case errors.Is(err, ErrIdle):
		return "idle"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case IsReset(err):
		return "reset"
	case errors.Is(err, context.Canceled), errors.Is(err, ErrDrained):
		return "shutdown"
	}
	return "error"
}
