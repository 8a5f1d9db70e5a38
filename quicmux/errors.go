package quicmux

import (
	"errors"
	"syscall"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// Sentinel errors at the package edge. Flow failures reported by the server are *StatusError
// values, which match the sentinel for their status with errors.Is.
var (
	ErrBadRequest  = errors.New("quicmux: bad request")
	ErrBadTarget   = flow.ErrBadTarget // one error, whether flow or quicmux found the target bad
	ErrProtocol    = errors.New("quicmux: protocol error")
	ErrRefused     = errors.New("quicmux: destination refused the connection")
	ErrUnreachable = errors.New("quicmux: destination unreachable")
	ErrDenied      = errors.New("quicmux: destination denied by the server's policy")
	ErrTimedOut    = errors.New("quicmux: destination timed out")
	ErrClosed      = errors.New("quicmux: closed")
	// ErrServerUnreachable: no QUIC connection to the server could be made within the dial timeout.
	ErrServerUnreachable = errors.New("quicmux: server unreachable")
	// ErrPinMismatch: the server's identity is not the pinned one.
	ErrPinMismatch = errors.New("quicmux: server fingerprint does not match the pin")
	// ErrTooManyConns: the server already has as many connections from this client identity
	// as it allows (ServerConfig.MaxConnsPerClient).
	ErrTooManyConns = errors.New("quicmux: server refused the connection: too many connections from this client identity")
	// ErrUnauthorized: the server did not accept this client's identity.
	ErrUnauthorized = errors.New("quicmux: server rejected this client's identity")
	// ErrShuttingDown: the server is draining and takes no new flows.
	ErrShuttingDown = errors.New("quicmux: server shutting down")
	// ErrInUse: the address a listen (Client.Listen) asked for is taken on the server.
	ErrInUse = errors.New("quicmux: address in use on the server")
	// ErrTooManyFlows: this client identity has as many flows open as the server allows it.
	ErrTooManyFlows = errors.New("quicmux: server refused the flow: too many flows open from this client identity")
)

// StatusError is a non-ok status from the server.
type StatusError struct{ Status Status }

func (e *StatusError) Error() string { return "quicmux: server answered " + e.Status.String() }

// Is matches the sentinel for the status, and for refusals also syscall.ECONNREFUSED so that
// callers written for kernel sockets keep working; every status matches flow.ErrRejected.
func (e *StatusError) Is(target error) bool {
	if target == flow.ErrRejected {
		return true // whatever the status: the server would not carry the flow
	}
	switch e.Status {
	case StatusRefused:
		return target == ErrRefused || target == syscall.ECONNREFUSED
	case StatusUnreachable:
		return target == ErrUnreachable || target == syscall.EHOSTUNREACH
	case StatusDenied:
		return target == ErrDenied
	case StatusTimedOut:
		return target == ErrTimedOut
	case StatusBadRequest:
		return target == ErrBadRequest
	case StatusShuttingDown:
		return target == ErrShuttingDown
	case StatusInUse:
		return target == ErrInUse || target == syscall.EADDRINUSE
	case StatusTooManyFlows:
		return target == ErrTooManyFlows
	}
	return false
}

// Application error codes used on streams (RESET_STREAM / STOP_SENDING) and connections.
const (
	// codeFlowReset: the TCP side of the flow was reset, or the relay aborted it.
	codeFlowReset quic.StreamErrorCode = 0x1
	// codeBadRequest: the server could not parse the request header.
	codeBadRequest quic.StreamErrorCode = 0x2
	// codeShutdown: the endpoint is shutting down and aborts the flows still open.
	codeShutdown quic.StreamErrorCode = 0x3
	// codePortUnreachable: a UDP flow's destination answered ICMP port unreachable.
	codePortUnreachable quic.StreamErrorCode = 0x4
	// codeIdle: a UDP flow ended after its idle timeout.
	codeIdle quic.StreamErrorCode = 0x5

	// connShutdown closes a connection on purpose.
	connShutdown quic.ApplicationErrorCode = 0x0
	// connSilent: the client gave the connection up because the server fell silent
	// (liveness.go); the server, if it hears it at all, closes its side.
	connSilent quic.ApplicationErrorCode = 0x3
)
