//go:build race

package flow

// raceEnabled scales bulk tests down: the race detector slows the data path about tenfold.
const raceEnabled = true
