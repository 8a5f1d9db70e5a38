package wan

import (
	"encoding/binary"
	"net"
	"sync/atomic"
	"time"

	"github.com/quicgate/quicgate/bench"
)

// reportEvery is how often the metering sink tells the sender how much it has received.
const reportEvery = 50 * time.Millisecond

// Dests are the servers every row's flows end at (in the server namespace): a metering sink
// and an echo.
//
// The sink reads and counts, and every reportEvery writes back a 16-byte report: the wall
// clock in nanoseconds and the bytes received so far (both big endian). The sender computes
// goodput from the last report it got before its deadline, over the window from its own
// dial, without waiting for the path to drain (sender and sink run on one host, so their
// wall clocks agree). The echo writes back what it reads.
type Dests = bench.Destinations

// ListenDests starts both servers on ip, ports chosen by the system.
func ListenDests(ip string) (*Dests, error) {
	return bench.ListenWith(ip, serveMeter, bench.ServeEcho)
}

func serveMeter(c net.Conn) {
	var n atomic.Int64
	done := make(chan struct{})
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		t := time.NewTicker(reportEvery)
		defer t.Stop()
		var rep [16]byte
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				binary.BigEndian.PutUint64(rep[:8], uint64(time.Now().UnixNano()))
				binary.BigEndian.PutUint64(rep[8:], uint64(n.Load()))
				_ = c.SetWriteDeadline(now.Add(10 * time.Second))
				if _, err := c.Write(rep[:]); err != nil {
					return
				}
			}
		}
	}()
	buf := make([]byte, 256<<10)
	for {
		k, err := c.Read(buf)
		n.Add(int64(k))
		if err != nil {
			break
		}
	}
	close(done)
	<-reported
}
