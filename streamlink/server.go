package streamlink

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"
)

// Defaults of ServerConfig.
const (
	DefaultHandshakeTimeout    = 10 * time.Second
	DefaultMaxPending          = 256
	DefaultMaxPendingPerSource = 16
)

// recvBuffer is the size of a received packet's buffer: quic-go reads into buffers of 16,383
// bytes (third_party/quic-go, MaxPacketBufferSize), so a longer packet could not be read
// anyway and is dropped as it arrives. recvQueue is how many packets wait for ReadFrom
// before the streams' readers wait in turn (and TCP's flow control slows their peers).
const (
	recvBuffer = 16 << 10
	recvQueue  = 128
)

// ServerConfig configures a Server.
type ServerConfig struct {
	// Handshake runs on each accepted stream before it carries packets (the TLS server
	// handshake), and returns the stream to use; nil: none. ctx ends at the handshake
	// deadline.
	Handshake func(ctx context.Context, c net.Conn) (net.Conn, error)
	// HandshakeTimeout bounds, from the stream's accept, both its Handshake and the QUIC
	// handshake that must follow: a stream that Claim has not taken by then is closed (a
	// slowloris peer, or one that never speaks QUIC). Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration
	// MaxPending bounds the streams accepted and not yet claimed, in all, and
	// MaxPendingPerSource those of one IP address: a stream beyond either is closed at
	// once. Defaults DefaultMaxPending and DefaultMaxPendingPerSource.
	MaxPending, MaxPendingPerSource int
	// Rejected, if set, is told why a stream was closed before it was claimed: "busy"
	// (a bound above), "handshake" (Handshake failed) or "timeout" (not claimed in time). It
	// must not block.
	Rejected func(peer net.Addr, reason string, err error)
}

// Server is the server's end: one net.PacketConn over every stream that a listener accepts,
// for a quic.Transport. Each stream is one peer address (the stream's remote address):
// ReadFrom returns the packets of every stream with its address, and WriteTo sends to the
// stream of the address it names (a packet for an address with no stream is dropped). A
// stream is pending from its accept until the QUIC connection on it is accepted (Claim);
// ServerConfig bounds pending streams. Memory per stream: its read buffer (64 KiB) and up
// to two queue buffers (QueueBytes each); packets read and not yet taken by ReadFrom are
// bounded in all (128 of 16 KiB).
type Server struct {
	ln  net.Listener
	cfg ServerConfig

	in      chan received
	ctx     context.Context // ends with Close: every stream's context derives from it
	cancel  context.CancelFunc
	closing chan struct{}
	wg      sync.WaitGroup
	bufs    sync.Pool

	mu        sync.Mutex
	closed    bool
	streams   map[string]*stream
	pending   int
	perSource map[netip.Addr]int
	deadline  time.Time
	changed   chan struct{} // closed when the read deadline changes
}

// stream is one accepted stream.
type stream struct {
	c      net.Conn
	addr   net.Addr
	source netip.Addr
	s      *sender
	ctx    context.Context // ends with the stream
	cancel context.CancelFunc

	claimed bool        // under Server.mu
	timer   *time.Timer // closes the stream if not claimed in time
}

type received struct {
	b    *[]byte
	n    int
	addr net.Addr
}

var _ net.PacketConn = (*Server)(nil)

// NewServer serves the streams ln accepts until Close, which closes ln.
func NewServer(ln net.Listener, cfg ServerConfig) *Server {
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.MaxPendingPerSource <= 0 {
		cfg.MaxPendingPerSource = DefaultMaxPendingPerSource
	}
	s := &Server{ln: ln, cfg: cfg, in: make(chan received, recvQueue), closing: make(chan struct{}),
		streams: map[string]*stream{}, perSource: map[netip.Addr]int{}, changed: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.bufs.New = func() any { b := make([]byte, recvBuffer); return &b }
	s.wg.Add(1)
	go s.accept()
	return s
}

// Addr is the listener's address.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

func (s *Server) accept() {
	defer s.wg.Done()
	var backoff time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors, say: wait and try again, as net/http does, rather
			// than stop taking streams for good.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			select {
			case <-time.After(backoff):
			case <-s.closing:
				return
			}
			continue
		}
		backoff = 0
		st := &stream{c: c, addr: c.RemoteAddr(), source: sourceOf(c.RemoteAddr())}
		if !s.admit(st) {
			_ = c.Close()
			s.rejected(st.addr, "busy", nil)
			continue
		}
		s.wg.Add(1)
		go s.serve(st)
	}
}

// sourceOf is what the per-source bound counts a stream under: its IPv4 address, or its
// IPv6 address's /64 (a host holds a whole /64, and could otherwise take every slot).
func sourceOf(a net.Addr) netip.Addr {
	ta, ok := a.(*net.TCPAddr)
	if !ok {
		return netip.Addr{}
	}
	addr := ta.AddrPort().Addr().Unmap()
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.Addr()
	}
	return addr
}

// admit counts st as pending, if the bounds let it.
func (s *Server) admit(st *stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.pending >= s.cfg.MaxPending || s.perSource[st.source] >= s.cfg.MaxPendingPerSource {
		return false
	}
	s.pending++
	s.perSource[st.source]++
	return true
}

// unpend stops counting st as pending; under s.mu.
func (s *Server) unpend(st *stream) {
	s.pending--
	if s.perSource[st.source]--; s.perSource[st.source] <= 0 {
		delete(s.perSource, st.source)
	}
}

func (s *Server) rejected(peer net.Addr, reason string, err error) {
	if s.cfg.Rejected != nil {
		s.cfg.Rejected(peer, reason, err)
	}
}

// serve runs one stream: its handshake, then its reader, until it ends.
func (s *Server) serve(st *stream) {
	defer s.wg.Done()
	st.ctx, st.cancel = context.WithCancel(s.ctx)
	raw := st.c // st.c changes with the handshake: the timer closes what it wraps
	st.timer = time.AfterFunc(s.cfg.HandshakeTimeout, func() {
		s.mu.Lock()
		late := !st.claimed
		s.mu.Unlock()
		if late {
			s.rejected(st.addr, "timeout", nil)
			_ = raw.Close() // the reader (or the handshake) fails and ends the stream
		}
	})
	if s.cfg.Handshake != nil {
		ctx, cancel := context.WithTimeout(st.ctx, s.cfg.HandshakeTimeout)
		c, err := s.cfg.Handshake(ctx, st.c)
		cancel()
		if err != nil {
			if st.timer.Stop() { // else the timer closed the stream and told "timeout"
				s.rejected(st.addr, "handshake", err)
			}
			_ = st.c.Close()
			s.mu.Lock()
			s.unpend(st)
			s.mu.Unlock()
			st.cancel()
			return
		}
		st.c = c
	}
	st.s = newSender(st.c, false) // patient once claimed
	key := st.addr.String()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.end(st)
		return
	}
	s.streams[key] = st
	s.mu.Unlock()

	_ = s.read(st) // a stream's end is no error of the server's
	s.mu.Lock()
	if s.streams[key] == st {
		delete(s.streams, key)
	}
	s.mu.Unlock()
	s.end(st)
}

// end closes a stream that has been registered (or was about to be).
func (s *Server) end(st *stream) {
	st.timer.Stop()
	_ = closeStream(st.c, st.s.close())
	s.mu.Lock()
	if !st.claimed {
		st.claimed = true // counted out once
		s.unpend(st)
	}
	s.mu.Unlock()
	st.cancel()
}

// read hands the stream's packets to ReadFrom until the stream ends.
func (s *Server) read(st *stream) error {
	fr := newFrameReader(st.c)
	for {
		b := s.bufs.Get().(*[]byte)
		n, err := fr.readFrame(*b)
		if err != nil {
			s.bufs.Put(b)
			return err
		}
		select {
		case s.in <- received{b: b, n: n, addr: st.addr}:
		case <-s.closing:
			s.bufs.Put(b)
			return net.ErrClosed
		}
	}
}

// Claim marks the stream of addr as carrying an accepted QUIC connection: it is no longer
// pending, and no longer timed out. The context it returns ends when the stream does; ok is
// false when addr has no stream (it came over UDP, or the stream has ended).
func (s *Server) Claim(addr net.Addr) (ctx context.Context, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streams[addr.String()]
	if st == nil {
		return nil, false
	}
	if !st.claimed {
		st.claimed = true
		st.timer.Stop()
		s.unpend(st)
		st.s.patient.Store(true)
	}
	return st.ctx, true
}

// CloseStream closes the stream of addr, if it has one, after writing what is queued on it
// (the QUIC connection's close, say).
func (s *Server) CloseStream(addr net.Addr) {
	s.mu.Lock()
	st := s.streams[addr.String()]
	s.mu.Unlock()
	if st != nil {
		_ = closeStream(st.c, st.s.close()) // its reader ends it
	}
}

// ReadFrom returns the next packet any stream carried, with the stream's address.
func (s *Server) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		s.mu.Lock()
		deadline, changed := s.deadline, s.changed
		s.mu.Unlock()
		var expired <-chan time.Time
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			t := time.NewTimer(d)
			defer t.Stop()
			expired = t.C
		}
		select {
		case r := <-s.in:
			n := copy(p, (*r.b)[:r.n])
			s.bufs.Put(r.b)
			return n, r.addr, nil
		case <-s.closing:
			return 0, nil, net.ErrClosed
		case <-expired:
			return 0, nil, os.ErrDeadlineExceeded
		case <-changed:
		}
	}
}

// WriteTo queues p for the stream of addr; a packet for an address with no stream is dropped.
func (s *Server) WriteTo(p []byte, addr net.Addr) (int, error) {
	s.mu.Lock()
	st := s.streams[addr.String()]
	s.mu.Unlock()
	if st == nil {
		return len(p), nil
	}
	if err := st.s.send(p); err != nil && !errors.Is(err, ErrTooLarge) {
		return len(p), nil // the stream is ending: as a packet lost
	} else if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close closes the listener and every stream, and waits for the goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.closing)
	s.cancel() // handshakes in progress end
	var open []*stream
	for _, st := range s.streams {
		open = append(open, st)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	for _, st := range open {
		_ = closeStream(st.c, st.s.close())
	}
	s.wg.Wait()
	return err
}

// LocalAddr is the listener's address.
func (s *Server) LocalAddr() net.Addr { return s.ln.Addr() }

// SetDeadline sets the read deadline (a write's wait has its own bound).
func (s *Server) SetDeadline(t time.Time) error { return s.SetReadDeadline(t) }

// SetReadDeadline sets the deadline of ReadFrom.
func (s *Server) SetReadDeadline(t time.Time) error {
	s.mu.Lock()
	s.deadline = t
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	return nil
}

// SetWriteDeadline does nothing: a write's wait has its own bound (a second, on a claimed
// stream; none on a stream not claimed yet).
func (s *Server) SetWriteDeadline(time.Time) error { return nil }

// SetReadBuffer and SetWriteBuffer do nothing: see Conn.SetReadBuffer.
func (s *Server) SetReadBuffer(int) error { return nil }

// SetWriteBuffer does nothing: see Conn.SetReadBuffer.
func (s *Server) SetWriteBuffer(int) error { return nil }
