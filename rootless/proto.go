package rootless

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// The parent and the child talk over a SOCK_SEQPACKET socket pair (the child's end is its
// descriptor 3), one JSON message per packet:
//
//	parent → child  setup{...}                 what to make
//	child → parent  ready{...} + the TUN fd    or ready{Error: ...}, then the child exits
//	parent → child  start{}                    exec the command
//	child → parent  nothing (the socket closes on exec), or ready{Error: ...} if exec failed

// setup is what the child makes in its namespaces.
type setup struct {
	TUN    string         `json:"tun"`
	MTU    int            `json:"mtu"`
	Addrs  []netip.Prefix `json:"addrs"`
	Routes []netip.Prefix `json:"routes"`
	Resolv string         `json:"resolv,omitempty"` // "" keeps the host's /etc/resolv.conf
	Path   string         `json:"path"`             // the command's executable
}

// Steps of the child's setup, named in its errors.
const (
	stepLo     = "lo"
	stepMount  = "mount"
	stepResolv = "resolv.conf"
	stepTUN    = "tun"
	stepOpen   = "open " + tunPath
	stepCaps   = "capabilities"
	stepExec   = "exec"
)

// ready is the child's answer: the device's name and what it set up, or why it failed.
type ready struct {
	Name   string `json:"name,omitempty"`
	IPv6   bool   `json:"ipv6,omitempty"`
	Resolv string `json:"resolv,omitempty"` // the file bind-mounted over, or why none was
	Step   string `json:"step,omitempty"`
	Error  string `json:"error,omitempty"`
	Errno  int    `json:"errno,omitempty"`
}

// start lets the child exec the command.
type start struct{}

// stepError is a failure in the child, as the parent receives it.
type stepError struct {
	Step  string
	Msg   string
	Errno unix.Errno
}

func (e *stepError) Error() string { return "in the command's namespace: " + e.Step + ": " + e.Msg }

// Unwrap gives the errno, so callers can errors.Is(err, unix.EPERM).
func (e *stepError) Unwrap() error {
	if e.Errno == 0 {
		return nil
	}
	return e.Errno
}

// failure turns a step's error into the message that carries it.
func failure(step string, err error) ready {
	r := ready{Step: step, Error: err.Error()}
	var errno unix.Errno
	if errors.As(err, &errno) {
		r.Errno = int(errno)
	}
	return r
}

// maxMsg bounds a message: they are small (the environment and arguments travel through
// exec, not the socket).
const maxMsg = 64 << 10

// send writes v as one packet, with fd attached when fd >= 0.
func send(c *net.UnixConn, v any, fd int) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	var oob []byte
	if fd >= 0 {
		oob = unix.UnixRights(fd)
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("rootless: sending: %w", err)
	}
	return nil
}

// receive reads one packet into v and returns the descriptor it carried, or -1. The
// peer's close reads as io.EOF.
func receive(c *net.UnixConn, v any) (int, error) {
	buf := make([]byte, maxMsg)
	oob := make([]byte, unix.CmsgSpace(4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return -1, err
	}
	fd := -1
	if oobn > 0 {
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			return -1, fmt.Errorf("rootless: control message: %w", err)
		}
		for _, m := range msgs {
			fds, err := unix.ParseUnixRights(&m)
			if err != nil {
				continue
			}
			for _, f := range fds {
				if fd < 0 {
					fd = f
				} else {
					_ = unix.Close(f) // only one is ever sent
				}
			}
		}
	}
	closeFD := func() {
		if fd >= 0 {
			_ = unix.Close(fd)
		}
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		closeFD()
		return -1, errors.New("rootless: message truncated")
	}
	if n == 0 {
		// A SOCK_SEQPACKET read of zero bytes is the peer's close: no message is empty.
		closeFD()
		return -1, io.EOF
	}
	if err := json.Unmarshal(buf[:n], v); err != nil {
		closeFD()
		return -1, fmt.Errorf("rootless: bad message: %w", err)
	}
	return fd, nil
}
