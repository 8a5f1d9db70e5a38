package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"
)

// CPU profiles of quicgate's processes (Env.Profile, qgbench -profile DIR): each quicgate
// process serves pprof on a loopback port of its own network namespace, and a path's
// flow-rate measurement saves a CPU profile of each process, taken while the flows open,
// as DIR/<path>-<process>.pprof (go tool pprof reads it with the binary).

// profiled is a path whose quicgate processes serve pprof: the client first, then the
// server.
type profiled interface{ Profiled() []*Proc }

// pprofArgs returns args with --pprof on a free loopback port when profiles are asked for,
// placed before a "--" that ends quicgate's own flags (quicgate run -- CMD).
func (env *Env) pprofArgs(args ...string) []string {
	if env.Profile == "" {
		return args
	}
	i := slices.Index(args, "--")
	if i < 0 {
		i = len(args)
	}
	return slices.Concat(args[:i], []string{"--pprof", "127.0.0.1:0"}, args[i:])
}

// waitPprof waits for the process's "pprof serving" line when profiles are asked for, and
// keeps its address; ns names the network namespace it runs in ("" for this one).
func (p *Proc) waitPprof(env *Env, ns string) error {
	if env.Profile == "" {
		return nil
	}
	m, err := p.WaitJSON("pprof serving", 10*time.Second)
	if err != nil {
		return err
	}
	addr, _ := m["addr"].(string)
	if addr == "" {
		return fmt.Errorf("%s: no addr in %v", p.name, m)
	}
	p.pprofAddr, p.pprofNS = strings.TrimPrefix(addr, "http://"), ns
	return nil
}

// profileWhile takes a CPU profile of every process of path p for about dur (whole
// seconds, at least one), while measure runs, and writes them to dir. It returns measure's
// error; a profile that fails is said on progress.
func profileWhile(ctx context.Context, dir string, p Path, dur time.Duration, progress io.Writer, measure func() error) error {
	pr, ok := p.(profiled)
	if dir == "" || !ok {
		return measure()
	}
	secs := max(1, int(dur/time.Second))
	var wg sync.WaitGroup
	for _, proc := range pr.Profiled() {
		if proc == nil || proc.pprofAddr == "" {
			continue
		}
		file := filepath.Join(dir, slug(p.Name())+"-"+slug(proc.name)+".pprof")
		wg.Go(func() {
			if err := proc.fetchProfile(ctx, secs, file); err != nil {
				fmt.Fprintf(progress, "profile of %s: %v\n", proc.name, err)
			}
		})
	}
	err := measure()
	wg.Wait()
	return err
}

// fetchProfile saves a CPU profile of secs seconds to file.
func (p *Proc) fetchProfile(ctx context.Context, secs int, file string) error {
	dial := (&net.Dialer{}).DialContext
	if p.pprofNS != "" {
		ns, err := netns.GetFromName(p.pprofNS)
		if err != nil {
			return err
		}
		defer ns.Close()
		// HTTP dials "tcp" only, which dialInNetns does.
		dial = func(ctx context.Context, _, addr string) (net.Conn, error) { return dialInNetns(ctx, ns, addr) }
	}
	client := &http.Client{Transport: &http.Transport{DialContext: dial}}
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", p.pprofAddr, secs)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}

// slug makes a path or process name a file name: "quicgate -L" is "quicgate-L".
func slug(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		case r == ' ':
			return '-'
		}
		return -1
	}, s)
}
