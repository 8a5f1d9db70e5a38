package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/internal/quichold"
	"github.com/quicgate/quicgate/quicmux"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// Floods: what a server's memory does under a flood of Initial packets from many source
// addresses, and under one client opening streams as fast as it can (cmd/qgflood).

// FloodKind names a flood.
type FloodKind string

const (
	// FloodInitials: real client Initials (a whole ClientHello) from many loopback addresses,
	// each from a fresh connection that never answers: spoofed sources, as the server sees
	// them.
	FloodInitials FloodKind = "initials"
	// FloodInitialsRetry: the same, but each source answers a Retry (it owns its address) and
	// then goes silent.
	FloodInitialsRetry FloodKind = "initials-retry"
	// FloodStreams: one authorized client opens streams as fast as it can, each with a valid
	// request to an allowed loopback echo, and keeps them open.
	FloodStreams FloodKind = "streams"
	// FloodSilentStreams: one authorized client opens streams as fast as it can and sends
	// nothing on them, so the server waits for each header (ServerConfig.HeaderTimeout).
	FloodSilentStreams FloodKind = "silent-streams"
)

// FloodKinds are the floods in the order qgflood runs them.
var FloodKinds = []FloodKind{FloodInitials, FloodInitialsRetry, FloodStreams, FloodSilentStreams}

// SourceAddr is the i-th of n loopback source addresses, in 127.16.0.0/12 with neither 0
// nor 255 as the last byte (every 127/8 address is local on Linux).
func SourceAddr(i, n int) netip.Addr {
	k := i % n
	hi := k / 254
	return netip.AddrFrom4([4]byte{127, byte(16 + hi>>8&0x0f), byte(hi), byte(k%254 + 1)})
}

// InitialFlood sends Initials to server from n source addresses with workers goroutines until
// ctx ends, and returns how many handshakes it started (each a whole first flight; with
// answerRetry each source also answers a Retry). Each comes from a fresh socket and a fresh
// quic-go client, dropped once its flight is out.
func InitialFlood(ctx context.Context, server *net.UDPAddr, sources, workers int, answerRetry bool) int64 {
	tlsConf := &tls.Config{NextProtos: []string{quicmux.ALPN}, ServerName: "quicgate", InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	var sent, next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				src := SourceAddr(int(next.Add(1)), sources)
				pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
				if err != nil {
					continue
				}
				// With answerRetry, a source that gets no answer at all (the server dropped its
				// Initial under load) gives up after a moment; its flight was out.
				hctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
				h, err := quichold.Start(hctx, pc, server, tlsConf, quichold.Options{AnswerRetry: answerRetry})
				cancel()
				if err == nil {
					h.Close()
				}
				if ctx.Err() == nil {
					sent.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return sent.Load()
}

// StreamFlood opens streams on conns connections to server as client until ctx ends, with
// workers goroutines a connection; each stream carries a request for target and is kept
// open, or (silent) only the request's first byte, so that the server waits for the rest
// (a stream with no byte at all is not seen by the server). It returns how many streams it
// opened and when it opened the last one. Streams beyond the server's MAX_STREAMS wait for
// credit, as a client's would.
func StreamFlood(ctx context.Context, server string, id *quicmux.Identity, target string, conns, workers int, silent bool) (int64, time.Time, error) {
	tgt, err := flow.ParseTarget(target)
	if err != nil {
		return 0, time.Time{}, err
	}
	hdr, err := quicmux.AppendRequest(nil, quicmux.Request{Kind: quicmux.KindTCP, Target: tgt})
	if err != nil {
		return 0, time.Time{}, err
	}
	if silent {
		hdr = hdr[:1]
	}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{id.Cert}, NextProtos: []string{quicmux.ALPN}, ServerName: "quicgate",
		InsecureSkipVerify: true, MinVersion: tls.VersionTLS13} // the bench trusts its own server
	var opened, last atomic.Int64
	var wg sync.WaitGroup
	var qcs []*quic.Conn
	defer func() {
		for _, qc := range qcs {
			_ = qc.CloseWithError(0, "")
		}
	}()
	for range conns {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		qc, err := quic.DialAddr(dctx, server, tlsConf, &quic.Config{KeepAlivePeriod: time.Second, MaxIncomingStreams: -1, MaxIncomingUniStreams: -1})
		cancel()
		if err != nil {
			return 0, time.Time{}, fmt.Errorf("stream flood: %w", err)
		}
		qcs = append(qcs, qc)
		for range workers {
			wg.Go(func() {
				for {
					str, err := qc.OpenStreamSync(ctx)
					if err != nil {
						return
					}
					opened.Add(1)
					last.Store(time.Now().UnixNano())
					_, _ = str.Write(hdr)
				}
			})
		}
	}
	wg.Wait()
	return opened.Load(), time.Unix(0, last.Load()), nil
}

// Probe is one legitimate client's attempt during a flood: connect, then one 64 KiB echo.
type Probe struct {
	At      time.Duration // since the flood began
	Connect time.Duration // until the client's QUIC connection was up
	Err     error
}

// ProbeOnce connects a new client to server and moves 64 KiB through echo and back.
func ProbeOnce(ctx context.Context, server string, id *quicmux.Identity, pin quicmux.Fingerprint, echo string) (time.Duration, error) {
	c, err := quicmux.NewClient(quicmux.ClientConfig{Server: server, Identity: id, Pin: pin, DialTimeout: 10 * time.Second})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.Connect(ctx); err != nil {
		return time.Since(start), fmt.Errorf("connect: %w", err)
	}
	connect := time.Since(start)
	conn, err := c.DialContext(ctx, "tcp", echo)
	if err != nil {
		return connect, fmt.Errorf("flow: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	msg := make([]byte, 64<<10)
	errc := make(chan error, 1)
	go func() { _, err := conn.Write(msg); errc <- err }()
	if _, err := io.ReadFull(conn, msg); err != nil {
		return connect, fmt.Errorf("echo: %w", err)
	}
	return connect, <-errc
}

// Memory is a process's resident memory, from /proc/PID/status.
type Memory struct{ RSS, HWM int64 }

// ReadMemory reads VmRSS and VmHWM of pid.
func ReadMemory(pid int) (Memory, error) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return Memory{}, err
	}
	return parseMemory(string(b))
}

func parseMemory(status string) (Memory, error) {
	var m Memory
	for line := range strings.SplitSeq(status, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m.RSS = kb << 10
		case "VmHWM:":
			m.HWM = kb << 10
		default:
			continue
		}
		if err != nil {
			return Memory{}, fmt.Errorf("proc status: %w", err)
		}
	}
	if m.RSS == 0 || m.HWM == 0 {
		return Memory{}, errors.New("proc status: no VmRSS or VmHWM")
	}
	return m, nil
}

// Sampler records a process's RSS every interval until stopped.
type Sampler struct {
	mu      sync.Mutex
	samples []Memory
	stop    chan struct{}
	done    chan struct{}
}

// Sample starts sampling pid.
func Sample(pid int, every time.Duration) *Sampler {
	s := &Sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if m, err := ReadMemory(pid); err == nil {
				s.mu.Lock()
				s.samples = append(s.samples, m)
				s.mu.Unlock()
			}
			select {
			case <-t.C:
			case <-s.stop:
				return
			}
		}
	}()
	return s
}

// Take returns the samples so far and starts a new series.
func (s *Sampler) Take() []Memory {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.samples
	s.samples = nil
	return out
}

// Stop ends sampling.
func (s *Sampler) Stop() {
	close(s.stop)
	<-s.done
}

// Median RSS of samples (0 for none).
func MedianRSS(samples []Memory) int64 {
	if len(samples) == 0 {
		return 0
	}
	r := make([]int64, len(samples))
	for i, m := range samples {
		r[i] = m.RSS
	}
	slices.Sort(r)
	return r[len(r)/2]
}

// PeakRSS is the highest RSS of samples.
func PeakRSS(samples []Memory) int64 {
	var p int64
	for _, m := range samples {
		p = max(p, m.RSS)
	}
	return p
}
