package quicmux

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/internal/logging"
)

// Access is what a server lets its clients do, as one reading of its files gives it: where
// their flows may go, where they may have it listen, and who they are.
type Access struct {
	// Rules are the destinations a flow may go to (the server's Policy).
	Rules Rules
	// Listen are where every client may have the server listen for a reverse forward
	// (ParseListenRules), besides what a client's own line in Authorized permits.
	Listen Rules
	// Authorized are the clients the server accepts.
	Authorized AuthorizedClients
}

// ListenAllowed reports whether fp may have the server listen on addr: the listen rules
// allow it, or the client's own permitlisten= options do.
func (a *Access) ListenAllowed(fp Fingerprint, addr netip.AddrPort) bool {
	return a.Listen.Allow(flow.TargetFromAddrPort(addr)) || a.Authorized.PermitsListen(fp, addr)
}

// LiveAccess is the Access in force while a server runs, which a reload replaces as a whole
// (Store). It is the server's ServerConfig.Authorized, Policy and ListenPolicy at once, each
// call judging by the Access in force at that moment:
//
//	live := quicmux.NewLiveAccess(acc)
//	srv, err := quicmux.NewServer(quicmux.ServerConfig{
//		Authorized: live.Authorized, Policy: live, ListenPolicy: live.ListenAllowed, ...})
//
// Storing a new Access changes what new flows and connections meet; what is already open is
// judged anew only by the server's Recheck, which a Reloader calls after each Store.
type LiveAccess struct {
	acc atomic.Pointer[Access]
}

var (
	_ ProtoPolicy   = (*LiveAccess)(nil)
	_ AnyPortPolicy = (*LiveAccess)(nil)
)

// NewLiveAccess returns a LiveAccess with a in force; a must not be nil.
func NewLiveAccess(a *Access) *LiveAccess {
	l := &LiveAccess{}
	l.Store(a)
	return l
}

// Load returns the Access in force.
func (l *LiveAccess) Load() *Access { return l.acc.Load() }

// Store puts a in force; a must not be nil.
func (l *LiveAccess) Store(a *Access) { l.acc.Store(a) }

// Authorized reports whether the client fp is authorized now (ServerConfig.Authorized).
func (l *LiveAccess) Authorized(fp Fingerprint) bool {
	_, ok := l.Load().Authorized[fp]
	return ok
}

// Allow is the rules' verdict on a TCP flow to t (Policy).
func (l *LiveAccess) Allow(t flow.Target) bool { return l.Load().Rules.Allow(t) }

// AllowProto is the rules' verdict on a flow of protocol p to t (ProtoPolicy).
func (l *LiveAccess) AllowProto(p Proto, t flow.Target) bool { return l.Load().Rules.AllowProto(p, t) }

// AllowAnyPort lets the server answer resolves (a client's --tun-dns) under the rules in
// force (AnyPortPolicy).
func (l *LiveAccess) AllowAnyPort(t flow.Target) bool { return l.Load().Rules.AllowAnyPort(t) }

// ListenAllowed is Access.ListenAllowed of the Access in force (ServerConfig.ListenPolicy).
func (l *LiveAccess) ListenAllowed(fp Fingerprint, addr netip.AddrPort) bool {
	return l.Load().ListenAllowed(fp, addr)
}

// What set a reload off, as its log line's trigger field says.
const (
	triggerSIGHUP      = "SIGHUP"
	triggerFileChanged = "file changed"
)

// ReloadConfig configures a Reloader. Load is required.
type ReloadConfig struct {
	// Load reads the Access anew: the files, and whatever else it is made of (the command
	// line's --allow, for quicgate server). An error keeps the Access in force.
	Load func() (*Access, error)
	// Files names the files Load reads, as they are named now. It is asked just before
	// each Load, so that a change made while Load reads is seen by the next look, and so
	// that files named by another file (a config file that names the authorized-clients
	// file) follow it. An error fails the reload as Load's would, and the files looked at
	// stay those of the last reload. nil: Load reads no file, and only Reload reloads.
	Files func() ([]string, error)
	// Interval is how often Run looks at the files; 0: never (only Reload, SIGHUP).
	Interval time.Duration
	// Logger receives one line per reload; nil discards.
	Logger *logrus.Entry
}

// Reloader keeps a server's LiveAccess current: on a change of its files (Run) or when asked
// (Reload, as for SIGHUP), it reads the Access anew, puts it in force and has the server
// apply it to what is open (Server.Recheck: a client no longer authorized loses its
// connection, a flow the new rules deny is reset, a reverse forward's listener they deny is
// closed; everything else is untouched). A reading that fails keeps the Access in force.
//
// Each reload logs one line with its trigger ("file changed" or "SIGHUP", or Reload's): on
// success "reloaded", with the counts of rules and clients now in force and of what Recheck
// ended (closed_connections, reset_flows, closed_listeners); on failure the warning "reload
// failed: keeping the rules and clients in force", with the error.
//
// The files are looked at by their metadata, two stat calls each Interval: no watcher to
// keep alive, and a file replaced by a rename (as editors and configuration managers save)
// is seen as well as one rewritten in place, removed or created. A change is acted on once
// the files have stayed as they are for a whole Interval, so that a file still being
// written is not read half-way: an authorized-clients file caught truncated would otherwise
// read as "nobody" and close every connection. A broken file is reported once; the next
// change of it is read again.
type Reloader struct {
	srv  *Server
	live *LiveAccess
	cfg  ReloadConfig
	log  *logrus.Entry

	mu    sync.Mutex // one reload at a time; guards watch
	watch *fileWatch
}

// NewReloader returns a Reloader of live, which srv's config uses (ServerConfig.Authorized,
// Policy, ListenPolicy), whose Access in force was read from the files as they are now.
func NewReloader(srv *Server, live *LiveAccess, cfg ReloadConfig) (*Reloader, error) {
	if srv == nil || live == nil || cfg.Load == nil {
		return nil, errors.New("quicmux: a reloader needs a server, its LiveAccess and ReloadConfig.Load")
	}
	if cfg.Interval < 0 {
		cfg.Interval = 0
	}
	var paths []string
	if cfg.Files != nil {
		var err error
		if paths, err = cfg.Files(); err != nil {
			return nil, err
		}
	}
	return &Reloader{srv: srv, live: live, cfg: cfg, log: logging.OrDiscard(cfg.Logger), watch: watchFiles(paths...)}, nil
}

// Reload reads the Access anew now and applies it, as SIGHUP does; trigger is what its log
// line names as its cause. It returns why a reading failed (the Access in force stays),
// which the log line says too.
func (r *Reloader) Reload(trigger string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.reload(trigger)
}

// Run looks at the files every Interval, reloading once they changed and held still, and
// reloads on every value received from hup (the channel signal.Notify delivers SIGHUP to;
// nil: none), with the trigger "SIGHUP", until ctx ends. Only Run looks at the files.
func (r *Reloader) Run(ctx context.Context, hup <-chan os.Signal) {
	var poll <-chan time.Time
	if r.cfg.Interval > 0 {
		tick := time.NewTicker(r.cfg.Interval)
		defer tick.Stop()
		poll = tick.C
	}
	for ctx.Err() == nil {
		select {
		case <-hup:
			_ = r.Reload(triggerSIGHUP)
		case <-poll:
			r.mu.Lock()
			if r.watch.changed() {
				_ = r.reload(triggerFileChanged)
			}
			r.mu.Unlock()
		case <-ctx.Done():
		}
	}
}

// reload runs under mu.
func (r *Reloader) reload(trigger string) error {
	log := r.log.WithField("trigger", trigger)
	acc, err := r.read()
	if err != nil {
		log.WithError(err).Warn("reload failed: keeping the rules and clients in force")
		return err
	}
	r.live.Store(acc)
	conns, flows, listeners := r.srv.Recheck()
	log.WithFields(logrus.Fields{"rules": len(acc.Rules), "clients": len(acc.Authorized), "closed_connections": conns, "reset_flows": flows, "closed_listeners": listeners}).Info("reloaded")
	return nil
}

// read records the files as they are before Load reads them (a change made while it reads
// is then seen by the next looks, never missed), and a reading that fails too, so that a
// broken file is reported once, not every Interval.
func (r *Reloader) read() (*Access, error) {
	if r.cfg.Files != nil {
		paths, err := r.cfg.Files()
		if err != nil {
			r.watch.reloading(r.watch.paths...)
			return nil, err
		}
		r.watch.reloading(paths...)
	}
	acc, err := r.cfg.Load()
	if err == nil && acc == nil {
		err = errors.New("quicmux: reload: Load returned no Access")
	}
	return acc, err
}

// fileWatch notices that a reloader's files changed. It polls their metadata; a change is
// reported once the files have stayed as they are for a whole period.
type fileWatch struct {
	paths   []string
	applied []fileStamp // the files as the last reload found them
	seen    []fileStamp // the files at the last poll
}

// fileStamp is what a poll compares: a missing file, one replaced (inode), or rewritten
// (modification time, size) all differ.
type fileStamp struct {
	exists bool
	ino    uint64
	mod    time.Time
	size   int64
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	st := fileStamp{exists: true, mod: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st
}

func stamps(paths []string) []fileStamp {
	out := make([]fileStamp, len(paths))
	for i, p := range paths {
		out[i] = stampOf(p)
	}
	return out
}

// watchFiles starts watching paths (empty ones are skipped) as they are now.
func watchFiles(paths ...string) *fileWatch {
	w := &fileWatch{}
	w.reloading(paths...)
	return w
}

// reloading records the files a reload is about to read, as they are before it reads them.
func (w *fileWatch) reloading(paths ...string) {
	var named []string
	for _, p := range paths {
		if p != "" {
			named = append(named, p)
		}
	}
	w.paths = named
	w.applied = stamps(w.paths)
	w.seen = w.applied
}

// changed polls the files: true when they differ from what the last reload read and have
// not changed since the previous poll.
func (w *fileWatch) changed() bool {
	now := stamps(w.paths)
	settled := slices.Equal(now, w.seen)
	w.seen = now
	return settled && !slices.Equal(now, w.applied)
}
