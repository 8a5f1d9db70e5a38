package flow

import (
	"sync"
	"testing"
)

// The pool never holds a burst back: bursts that block all run at once, each on a
// goroutine of its own, and a later burst reuses a goroutine left idle. (TestMain's goleak
// check finds the idle ones gone once workerIdle has passed.)
func TestSpawnRunsEveryBurstAtOnce(t *testing.T) {
	const n = 16
	var started sync.WaitGroup
	started.Add(n)
	release := make(chan struct{})
	var done sync.WaitGroup
	done.Add(n)
	for range n {
		spawn(func() {
			defer done.Done()
			started.Done()
			<-release
		})
	}
	started.Wait() // all n run together: none waited for another to finish
	close(release)
	done.Wait()
	ran := make(chan struct{})
	spawn(func() { close(ran) })
	<-ran
}
