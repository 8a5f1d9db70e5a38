package flow

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
)

// rejection is an error that says the tunnel refused the flow, as quicmux's *StatusError does.
type rejection struct{}

func (rejection) Error() string        { return "rejected" }
func (rejection) Is(target error) bool { return target == ErrRejected }

func TestResult(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{fmt.Errorf("flow: %w", rejection{}), "rejected"},
		{fmt.Errorf("x: %w", ErrIdle), "idle"},
		{fmt.Errorf("x: %w", ErrReset), "reset"},
		{syscall.ECONNRESET, "reset"},
		{syscall.EPIPE, "reset"},
		{context.Canceled, "shutdown"},
		{ErrDrained, "shutdown"},
		{errors.New("other"), "error"},
	} {
		if got := Result(tt.err); got != tt.want {
			t.Errorf("Result(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
