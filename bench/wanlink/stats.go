package wanlink

import (
	"sync/atomic"
	"time"
)

// LateAfter is how far past its due time a packet may reach the far end before it counts as
// late. The writer sleeps with microsecond precision and wakes at most every minSleep, so a
// packet is normally less than half a millisecond late; a late one means the emulator did
// not keep up.
const LateAfter = 2 * time.Millisecond

// counters are one direction's live statistics.
type counters struct {
	packets, bytes          atomic.Int64 // read from the device, after GSO splitting
	lost, queueFull         atomic.Int64
	blocked                 atomic.Int64 // UDP packets dropped while UDP is blocked
	oversize, maxSize       atomic.Int64
	delivered, deliveredB   atomic.Int64
	late, maxLateNs         atomic.Int64
	reads, writes           atomic.Int64 // device read and write calls
	readErrors, writeErrors atomic.Int64
}

func storeMax(v *atomic.Int64, x int64) {
	for {
		old := v.Load()
		if x <= old || v.CompareAndSwap(old, x) {
			return
		}
	}
}

// DirStats is a snapshot of one direction, counted since the link opened.
type DirStats struct {
	Packets        int64  `json:"packets"` // packets read from the sending device (each at most the MTU)
	Bytes          int64  `json:"bytes"`
	Lost           int64  `json:"lost"`       // random loss
	QueueFull      int64  `json:"queue_full"` // tail drops at the bottleneck
	Oversize       int64  `json:"oversize"`   // packets larger than the MTU (dropped; should stay 0)
	MaxSize        int64  `json:"max_size"`   // largest packet seen, bytes
	Delivered      int64  `json:"delivered"`
	DeliveredBytes int64  `json:"delivered_bytes"`
	Late           int64  `json:"late"` // delivered more than LateAfter past due
	MaxLateUs      int64  `json:"max_late_us"`
	Reads          int64  `json:"reads"`
	Writes         int64  `json:"writes"`
	ReadErrors     int64  `json:"read_errors"`
	WriteErrors    int64  `json:"write_errors"`
	TxDropped      uint64 `json:"tx_dropped"` // dropped by the kernel before the emulator read them
}

func (c *counters) snapshot() DirStats {
	return DirStats{
		Packets: c.packets.Load(), Bytes: c.bytes.Load(), Lost: c.lost.Load(), QueueFull: c.queueFull.Load(),
		Oversize: c.oversize.Load(), MaxSize: c.maxSize.Load(), Delivered: c.delivered.Load(), DeliveredBytes: c.deliveredB.Load(),
		Late: c.late.Load(), MaxLateUs: c.maxLateNs.Load() / 1e3, Reads: c.reads.Load(), Writes: c.writes.Load(),
		ReadErrors: c.readErrors.Load(), WriteErrors: c.writeErrors.Load(),
	}
}

// Stats are both directions: Up is client to server, Down server to client.
type Stats struct {
	Up   DirStats `json:"up"`
	Down DirStats `json:"down"`
}
