package bench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Proc is a process a path started; its stderr (and stdout) lines are kept for errors and
// offered to waiters. The WAN harness (bench/wan) uses it too.
type Proc struct {
	name  string
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	ch    chan string
	done  chan struct{}

	// pprofAddr is where the process serves pprof (Env.Profile), in the network namespace
	// pprofNS ("": this one).
	pprofAddr, pprofNS string
}

func StartProc(name string, cmd *exec.Cmd) (*Proc, error) {
	p := &Proc{name: name, cmd: cmd, ch: make(chan string, 256), done: make(chan struct{})}
	out, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = cmd.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	go func() {
		defer close(p.done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.mu.Lock()
			if len(p.lines) < 200 {
				p.lines = append(p.lines, sc.Text())
			}
			p.mu.Unlock()
			select {
			case p.ch <- sc.Text():
			default:
			}
		}
	}()
	return p, nil
}

// WaitJSON returns the first JSON line whose "msg" is msg.
func (p *Proc) WaitJSON(msg string, timeout time.Duration) (map[string]any, error) {
	t := time.After(timeout)
	for {
		select {
		case l := <-p.ch:
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
				return m, nil
			}
		case <-p.done:
			return nil, fmt.Errorf("%s exited: %s", p.name, p.Tail())
		case <-t:
			return nil, fmt.Errorf("%s: no %q within %v: %s", p.name, msg, timeout, p.Tail())
		}
	}
}

func (p *Proc) Tail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.lines)
	return strings.Join(p.lines[max(0, n-5):], " | ")
}

// Lines returns the first 200 lines the process wrote.
func (p *Proc) Lines() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lines)
}

func (p *Proc) PID() int { return p.cmd.Process.Pid }

func (p *Proc) Stop() {
	if p == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(3 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	_ = p.cmd.Wait()
}

// rssBytes sums VmRSS of pids.
func rssBytes(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				total += kb << 10
			}
		}
	}
	return total
}

// CPUSeconds sums user and system time of pids, with that of their children already reaped
// (socat's per-connection forks end up there).
func CPUSeconds(pids []int) float64 {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
		if len(f) > 14 {
			for _, i := range []int{11, 12, 13, 14} { // utime, stime, cutime, cstime
				v, _ := strconv.ParseInt(f[i], 10, 64)
				ticks += v
			}
		}
	}
	return float64(ticks) / 100 // USER_HZ
}

// Descendants returns pid and every process below it.
func Descendants(pid int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndex(s, ")")+2:])
		if len(f) > 1 {
			pp, _ := strconv.Atoi(f[1])
			children[pp] = append(children[pp], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}
