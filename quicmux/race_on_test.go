//go:build race

package quicmux

// raceEnabled scales bulk tests down: the race detector slows the data path about tenfold.
const raceEnabled = true
