package main

import (
	"os"
	"syscall"
	"time"
)

// fileWatch notices that the server's access files (the authorized clients, the config file
// with the allow rules) changed, so that an edit reloads them as SIGHUP does. It polls their
// metadata: two stat calls a period, no watcher to keep alive, and it sees a file replaced by
// a rename (as editors and configuration managers save) as well as one rewritten in place.
// A change is reported once the files have stayed as they are for a whole period, so a file
// still being written is not read half-way: an authorized-clients file caught truncated
// would otherwise parse as "nobody" and close every connection.
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

func sameStamps(a, b []fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// watchFiles starts watching paths (empty ones are skipped) as they are now.
func watchFiles(paths ...string) *fileWatch {
	w := &fileWatch{}
	w.reloading(paths...)
	return w
}

// reloading records the files a reload is about to read, as they are before it reads them:
// a change made while it reads is then seen by the next polls, never missed. A reload that
// fails is recorded too, so a broken file is reported once, not every period.
func (w *fileWatch) reloading(paths ...string) {
	w.paths = nil
	for _, p := range paths {
		if p != "" {
			w.paths = append(w.paths, p)
		}
	}
	w.applied = stamps(w.paths)
	w.seen = w.applied
}

// changed polls the files: true when they differ from what the last reload read and have
// not changed since the previous poll.
func (w *fileWatch) changed() bool {
	now := stamps(w.paths)
	settled := sameStamps(now, w.seen)
	w.seen = now
	return settled && !sameStamps(now, w.applied)
}
