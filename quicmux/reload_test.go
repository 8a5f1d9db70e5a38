package quicmux

import (
	"context"
	"errors"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
)

// A LiveAccess judges by the Access in force at each call: the rules (per protocol, and on
// any port for resolves), the authorized clients, and where a client may have the server
// listen (the listen rules, or its own permitlisten=).
func TestLiveAccess(t *testing.T) {
	alice, bob := Fingerprint{1}, Fingerprint{2}
	listen, err := ParseListenRules([]string{"127.0.0.1:8080"})
	if err != nil {
		t.Fatal(err)
	}
	permit, err := ParseListenRule("127.0.0.1:9000")
	if err != nil {
		t.Fatal(err)
	}
	live := NewLiveAccess(&Access{
		Rules:      mustRules(t, "10.0.0.0/8:80", "udp:10.0.0.53:53"),
		Listen:     listen,
		Authorized: AuthorizedClients{alice: {Name: "alice", PermitListen: Rules{permit}}},
	})
	target := func(s string) flow.Target {
		t.Helper()
		tg, err := flow.ParseTarget(s)
		if err != nil {
			t.Fatal(err)
		}
		return tg
	}
	ap := netip.MustParseAddrPort
	for _, c := range []struct {
		what      string
		got, want bool
	}{
		{"tcp to an allowed port", live.Allow(target("10.1.2.3:80")), true},
		{"tcp to another port", live.Allow(target("10.1.2.3:81")), false},
		{"udp to a udp rule", live.AllowProto(ProtoUDP, target("10.0.0.53:53")), true},
		{"tcp to a udp rule", live.AllowProto(ProtoTCP, target("10.0.0.53:53")), false},
		{"a resolve's address", live.AllowAnyPort(flow.Target{Addr: netip.MustParseAddr("10.9.9.9")}), true},
		{"a resolve's other address", live.AllowAnyPort(flow.Target{Addr: netip.MustParseAddr("192.0.2.1")}), false},
		{"alice", live.Authorized(alice), true},
		{"bob", live.Authorized(bob), false},
		{"bob listens where the rules allow", live.ListenAllowed(bob, ap("127.0.0.1:8080")), true},
		{"bob listens where alice may", live.ListenAllowed(bob, ap("127.0.0.1:9000")), false},
		{"alice listens where she may", live.ListenAllowed(alice, ap("127.0.0.1:9000")), true},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v, want %v", c.what, c.got, c.want)
		}
	}
	live.Store(&Access{Rules: mustRules(t, "192.0.2.0/24"), Authorized: AuthorizedClients{bob: {}}})
	if live.Allow(target("10.1.2.3:80")) || !live.Allow(target("192.0.2.1:22")) || live.Authorized(alice) || !live.Authorized(bob) ||
		live.ListenAllowed(bob, ap("127.0.0.1:8080")) {
		t.Fatal("a stored Access is not the one in force")
	}
}

// reloadFiles are a rules file (one rule a line) and an authorized-clients file, read as an
// Access the way quicgate server reads its flags' and config file's.
type reloadFiles struct {
	dir, rules, auth string
}

func newReloadFiles(t *testing.T) *reloadFiles {
	dir := t.TempDir()
	return &reloadFiles{dir: dir, rules: filepath.Join(dir, "rules"), auth: filepath.Join(dir, "authorized_clients")}
}

func (f *reloadFiles) files() ([]string, error) { return []string{f.rules, f.auth}, nil }

func (f *reloadFiles) load() (*Access, error) {
	b, err := os.ReadFile(f.rules)
	if err != nil {
		return nil, err
	}
	rules, err := ParseRules(strings.Fields(string(b)))
	if err != nil {
		return nil, err
	}
	authorized, err := LoadAuthorizedClients(f.auth)
	if err != nil {
		return nil, err
	}
	return &Access{Rules: rules, Authorized: authorized}, nil
}

// write replaces path's content by a rename, as editors save.
func (f *reloadFiles) write(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// reloadLog collects a reloader's log lines for a test to wait for, in order.
type reloadLog struct {
	mu      sync.Mutex
	entries []*logrus.Entry
	next    int
	wake    chan struct{}
}

func newReloadLog(t *testing.T) (*logrus.Entry, *reloadLog) {
	rl := &reloadLog{wake: make(chan struct{})}
	log := testLogger(t)
	log.Logger.AddHook(rl)
	return log, rl
}

func (rl *reloadLog) Levels() []logrus.Level { return logrus.AllLevels }

func (rl *reloadLog) Fire(e *logrus.Entry) error {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if e.Message == "reloaded" || strings.HasPrefix(e.Message, "reload failed") {
		rl.entries = append(rl.entries, &logrus.Entry{Message: e.Message, Data: maps.Clone(e.Data), Level: e.Level})
		close(rl.wake)
		rl.wake = make(chan struct{})
	}
	return nil
}

// wait returns the next reload line, which must say msg.
func (rl *reloadLog) wait(t *testing.T, msg string) logrus.Fields {
	t.Helper()
	timer := time.NewTimer(hangLimit)
	defer timer.Stop()
	for {
		rl.mu.Lock()
		wake := rl.wake
		if rl.next < len(rl.entries) {
			e := rl.entries[rl.next]
			rl.next++
			rl.mu.Unlock()
			if e.Message != msg {
				t.Fatalf("reload logged %q %v, want %q", e.Message, e.Data, msg)
			}
			return e.Data
		}
		rl.mu.Unlock()
		select {
		case <-wake:
		case <-timer.C:
			t.Fatalf("no %q line within %v", msg, hangLimit)
		}
	}
}

// lines is how many reload lines were logged.
func (rl *reloadLog) lines() int {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	return len(rl.entries)
}

// A Reloader rereads its files on Reload and, under Run, on SIGHUP and once an edit holds
// still; it puts the new Access in force and has the server apply it to what is open: a
// broken file keeps the old rules (reported once), a flow the new rules deny is reset and
// others go on, a client removed from the file loses its connection (that it cannot come
// back is the server's Authorized: TestRecheckAfterReload).
func TestReloader(t *testing.T) {
	keep := destination(t, echo)
	drop := destination(t, echo)
	files := newReloadFiles(t)
	var live *LiveAccess
	tn := newTunnel(t, func(tn *tunnel) {
		files.write(t, files.rules, "127.0.0.1/32:"+portOf(t, keep)+"\n127.0.0.1/32:"+portOf(t, drop)+"\n")
		files.write(t, files.auth, tn.clientID.Fingerprint.String()+" the test's client\n")
		acc, err := files.load()
		if err != nil {
			t.Fatal(err)
		}
		live = NewLiveAccess(acc)
		tn.serverCfg.Authorized, tn.serverCfg.Policy, tn.serverCfg.ListenPolicy = live.Authorized, live, live.ListenAllowed
	})
	log, lines := newReloadLog(t)
	const interval = 20 * time.Millisecond
	r, err := NewReloader(tn.server, live, ReloadConfig{Files: files.files, Load: files.load, Interval: interval, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	a, err := net.Dial("tcp", tn.forward(keep))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	checkEcho(t, a, "kept")
	b, err := net.Dial("tcp", tn.forward(drop))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	checkEcho(t, b, "dropped")

	// A broken file: the rules in force stay, and Reload says why.
	before := live.Load()
	files.write(t, files.rules, "10.0.0.1/8\n")
	if err := r.Reload("test"); err == nil {
		t.Fatal("Reload of a broken file: no error")
	}
	if m := lines.wait(t, "reload failed: keeping the rules and clients in force"); m["trigger"] != "test" || m[logrus.ErrorKey] == nil {
		t.Fatalf("reload failed: %v, want the trigger and the error", m)
	}
	if live.Load() != before {
		t.Fatal("a broken file replaced the Access in force")
	}
	checkEcho(t, a, "after a broken reload")
	checkEcho(t, b, "after a broken reload")

	// The second destination is no longer allowed: its flow is reset, the other goes on.
	files.write(t, files.rules, "127.0.0.1/32:"+portOf(t, keep)+"\n")
	if err := r.Reload("test"); err != nil {
		t.Fatal(err)
	}
	if m := lines.wait(t, "reloaded"); m["rules"] != 1 || m["clients"] != 1 || m["reset_flows"] != 1 || m["closed_connections"] != 0 || m["closed_listeners"] != 0 {
		t.Fatalf("reloaded: %v, want 1 rule, 1 client, 1 flow reset", m)
	}
	expectReset(t, b, resetLimit)
	checkEcho(t, a, "after the new rules")

	// Under Run: SIGHUP reloads.
	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	ran := make(chan struct{})
	go func() { defer close(ran); r.Run(ctx, hup) }()
	defer func() { cancel(); <-ran }()
	hup <- syscall.SIGHUP
	if m := lines.wait(t, "reloaded"); m["trigger"] != "SIGHUP" || m["reset_flows"] != 0 {
		t.Fatalf("reloaded: %v, want the trigger SIGHUP and nothing reset", m)
	}

	// A broken edit is reported once, however long it stays.
	files.write(t, files.rules, "10.0.0.2/8\n")
	if m := lines.wait(t, "reload failed: keeping the rules and clients in force"); m["trigger"] != "file changed" {
		t.Fatalf("reload failed: %v, want the trigger \"file changed\"", m)
	}
	time.Sleep(10 * interval)
	if n := lines.lines(); n != 4 {
		t.Fatalf("%d reload lines after a broken edit held still, want the one failure", n)
	}
	checkEcho(t, a, "after a broken edit")

	// Mended: read again.
	files.write(t, files.rules, "127.0.0.1/32:"+portOf(t, keep)+"\n")
	if m := lines.wait(t, "reloaded"); m["trigger"] != "file changed" || m["reset_flows"] != 0 {
		t.Fatalf("reloaded: %v, want the trigger \"file changed\" and nothing reset", m)
	}
	checkEcho(t, a, "after a good edit")

	// The client removed from its file, replaced by a rename: its connection closes.
	files.write(t, files.auth, "# nobody\n")
	if m := lines.wait(t, "reloaded"); m["trigger"] != "file changed" || m["clients"] != 0 || m["closed_connections"] != 1 {
		t.Fatalf("reloaded: %v, want the trigger \"file changed\" and 1 connection closed", m)
	}
	expectReset(t, a, resetLimit)
}

// A Reloader needs a server, its LiveAccess and a Load; Files that fail at the start fail it.
func TestNewReloaderChecks(t *testing.T) {
	tn := newTunnel(t)
	live := NewLiveAccess(&Access{})
	load := func() (*Access, error) { return &Access{}, nil }
	if _, err := NewReloader(nil, live, ReloadConfig{Load: load}); err == nil {
		t.Error("no server: no error")
	}
	if _, err := NewReloader(tn.server, live, ReloadConfig{}); err == nil {
		t.Error("no Load: no error")
	}
	broken := errors.New("broken config")
	if _, err := NewReloader(tn.server, live, ReloadConfig{Load: load, Files: func() ([]string, error) { return nil, broken }}); !errors.Is(err, broken) {
		t.Errorf("failing Files: %v, want its error", err)
	}
	// A Load that returns nothing fails the reload; the Access in force stays.
	r, err := NewReloader(tn.server, live, ReloadConfig{Load: func() (*Access, error) { return nil, nil }})
	if err != nil {
		t.Fatal(err)
	}
	before := live.Load()
	if err := r.Reload("test"); err == nil || live.Load() != before {
		t.Fatalf("Load returning nil: %v, and the Access in force changed: %v", err, live.Load() != before)
	}
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A poll reports a change once the files differ from what the last reload read and have held
// still for a poll: a rewrite in place, a replacement by rename with the same size and time, a
// removal and a file appearing all count; nothing changed, or a change still settling, does not.
func TestFileWatch(t *testing.T) {
	dir := t.TempDir()
	auth, config := filepath.Join(dir, "authorized"), filepath.Join(dir, "server.yaml")
	write := func(path, s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(auth, "# nobody\n")
	w := watchFiles(auth, "", config) // the config file does not exist yet; "" is skipped
	if len(w.paths) != 2 {
		t.Fatalf("watching %v, want the two named files", w.paths)
	}
	expect := func(polls ...bool) {
		t.Helper()
		for i, want := range polls {
			if got := w.changed(); got != want {
				t.Fatalf("poll %d: changed = %v, want %v", i, got, want)
			}
		}
	}
	expect(false, false)

	write(auth, "# nobody at all\n") // in place
	expect(false, true)              // settling, then settled
	w.reloading(w.paths...)
	expect(false, false)

	// Replaced by a rename, with the old file's size and modification time: the inode tells.
	old, err := os.Stat(auth)
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "authorized.new")
	write(tmp, "# nobody AT ALL\n")
	if err := os.Chtimes(tmp, old.ModTime(), old.ModTime()); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, auth); err != nil {
		t.Fatal(err)
	}
	expect(false, true)
	w.reloading(w.paths...)

	// A file that keeps changing is not reported until it holds still.
	write(config, "allow: []\n")
	expect(false)
	write(config, "allow: [127.0.0.1/32]\n")
	expect(false, true)
	w.reloading(w.paths...)

	if err := os.Remove(config); err != nil {
		t.Fatal(err)
	}
	expect(false, true)
	w.reloading(w.paths...)
	expect(false)

}
