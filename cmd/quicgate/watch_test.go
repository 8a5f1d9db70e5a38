package main

import (
	"os"
	"path/filepath"
	"testing"
)

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
