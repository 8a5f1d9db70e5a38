package ingress

import (
	"bytes"
	"sync"

	"github.com/quicgate/quicgate/flow"
)

// sharedFlow is the app's end (a flow.PacketConn) of one UDP flow of a socket that many
// flows share: a -U port's source, a SOCKS5 association's target. The socket's reader hands
// the flow's packets to deliver; they wait (copied, at most sharedFlowQueue) while the
// tunnel's end is opened, then go straight to the relay. The flow's answers go to write.
type sharedFlow struct {
	write   func(ps [][]byte) // to the app, from the shared socket
	onClose func()            // forgets the flow, so that the app's next packet opens a new one

	mu      sync.Mutex
	out     func([][]byte) // the relay's, once started
	pending [][]byte
	failed  bool // the flow could not be opened: packets are dropped
}

var _ flow.PacketConn = (*sharedFlow)(nil)

// sharedFlowQueue bounds the packets a flow keeps while the server answers its request (a
// round trip); more are dropped, as a full socket buffer drops them.
const sharedFlowQueue = 64

// deliver hands the app's packets to the relay, or keeps copies until it starts. It runs
// on the shared socket's reader: the relay may wait there while the tunnel's datagram
// queue is full, which leaves the rest in the socket's buffer.
func (f *sharedFlow) deliver(ps [][]byte) {
	f.mu.Lock()
	out := f.out
	if out == nil {
		if !f.failed {
			for _, p := range ps[:min(len(ps), sharedFlowQueue-len(f.pending))] {
				f.pending = append(f.pending, bytes.Clone(p))
			}
		}
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	out(ps)
}

// fail drops the flow's packets from now on (its flow could not be opened).
func (f *sharedFlow) fail() {
	f.mu.Lock()
	f.failed, f.pending = true, nil
	f.mu.Unlock()
}

// Start takes the app's packets from now on, those kept while the flow opened first.
func (f *sharedFlow) Start(out func([][]byte), _ func(error)) {
	for {
		f.mu.Lock()
		pending := f.pending
		f.pending = nil
		if len(pending) == 0 {
			f.out = out // deliver hands the next packets over itself
			f.mu.Unlock()
			return
		}
		f.mu.Unlock()
		out(pending)
	}
}

// WritePackets sends the flow's answers to the app.
func (f *sharedFlow) WritePackets(ps [][]byte) error {
	f.write(ps)
	return nil
}

// Close forgets the flow (the relay closes it when the flow ends). The app hears nothing, as
// a UDP app behind a NAT does not.
func (f *sharedFlow) Close(error) { f.onClose() }
