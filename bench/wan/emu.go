package wan

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/quicgate/quicgate/bench"
	"github.com/quicgate/quicgate/bench/wanlink"
)

// emulator is the link emulator process (qgwan link) for one profile. It runs in the host
// namespace, so that its CPU use is its own, and exits when its stdin closes, so it never
// outlives the harness.
type emulator struct {
	p     *bench.Proc
	stdin io.WriteCloser
	mu    sync.Mutex
}

// LinkArgs is the qgwan link command line for a profile.
func LinkArgs(t *Topology, prof Profile, seed uint64) []string {
	return []string{"link", "--client-ns", t.Client, "--server-ns", t.Server,
		"--client-addr", ClientIP + "/24", "--server-addr", ServerIP + "/24",
		"--rate", FormatRate(prof.Rate), "--rtt", prof.RTT.String(),
		"--loss", strconv.FormatFloat(prof.Loss*100, 'f', -1, 64) + "%", "--seed", strconv.FormatUint(seed, 10)}
}

func startEmulator(self string, t *Topology, prof Profile, seed uint64) (*emulator, error) {
	cmd := exec.Command(self, LinkArgs(t, prof, seed)...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	p, err := bench.StartProc("qgwan link", cmd)
	if err != nil {
		return nil, err
	}
	e := &emulator{p: p, stdin: stdin}
	if _, err := p.WaitJSON("link ready", 10*time.Second); err != nil {
		e.stop()
		return nil, err
	}
	return e, nil
}

// StatsLine is the emulator's answer to "stats" on its stdin.
type StatsLine struct {
	Msg string `json:"msg"`
	wanlink.Stats
	Err string `json:"error,omitempty"`
}

func (e *emulator) stats() (wanlink.Stats, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, err := io.WriteString(e.stdin, "stats\n"); err != nil {
		return wanlink.Stats{}, fmt.Errorf("emulator: %w: %s", err, e.p.Tail())
	}
	m, err := e.p.WaitJSON("stats", 5*time.Second)
	if err != nil {
		return wanlink.Stats{}, err
	}
	b, _ := json.Marshal(m)
	var s StatsLine
	if err := json.Unmarshal(b, &s); err != nil {
		return wanlink.Stats{}, err
	}
	if s.Err != "" {
		return s.Stats, fmt.Errorf("emulator: %s", s.Err)
	}
	return s.Stats, nil
}

// cpu is the emulator's CPU time so far in seconds, in user space and in the kernel. The
// kernel part includes what the kernel does inside its writes, injecting each packet into
// the receiving namespace's stack; a kernel without IRQ time accounting (this one) also
// charges the receiving TCP's softirq work to it.
func (e *emulator) cpu() (user, sys float64) {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(e.p.PID()), "stat"))
	if err != nil {
		return 0, 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
	if len(f) < 13 {
		return 0, 0
	}
	u, _ := strconv.ParseFloat(f[11], 64) // utime, in USER_HZ (100) ticks
	k, _ := strconv.ParseFloat(f[12], 64) // stime
	return u / 100, k / 100
}

func (e *emulator) stop() {
	_ = e.stdin.Close()
	e.p.Stop()
}
