package quicmux

import (
	"context"
	"errors"
	"testing"

	"github.com/quicgate/quicgate/flow"
)

// abortConn is a flow.Conn that records Abort.
type abortConn struct {
	flow.Conn
	aborted bool
}

func (c *abortConn) Abort() { c.aborted = true }

// Each kind of Local releases its own end: a Flow resets its conn, a Pending rejects its
// handshake with why, a Reverse resets the server's connection.
func TestLocalRelease(t *testing.T) {
	why := errors.New("turned down")
	conn := &abortConn{}
	Flow{Conn: conn}.Release(why)
	if !conn.aborted {
		t.Error("Flow.Release did not reset its conn")
	}
	var got error
	Pending{Accept: func() (flow.Conn, error) { return nil, nil }, Reject: func(err error) { got = err }}.Release(why)
	if got != why {
		t.Errorf("Pending.Release rejected with %v, want %v", got, why)
	}
	remote := &abortConn{}
	Reverse{Remote: remote}.Release(why)
	if !remote.aborted {
		t.Error("Reverse.Release did not reset the server's connection")
	}
}

// A Local missing what its kind needs fails at once, releases what it has, and done is
// called once, before Carry returns; the client is never asked for a stream.
func TestCarryIncompleteLocal(t *testing.T) {
	c := &Client{}
	remote := &abortConn{}
	rejected := 0
	for _, l := range []Local{
		Flow{},
		Pending{Reject: func(error) { rejected++ }},
		Reverse{Remote: remote},
	} {
		calls := 0
		c.Carry(context.Background(), l, func(_ flow.Stats, err error) {
			calls++
			if err == nil {
				t.Errorf("%T: done with nil", l)
			}
		})
		if calls != 1 {
			t.Errorf("%T: done called %d times before Carry returned, want 1", l, calls)
		}
	}
	if rejected != 1 || !remote.aborted {
		t.Errorf("Pending rejected %d times (want 1), Reverse's remote reset %v (want true)", rejected, remote.aborted)
	}
}
