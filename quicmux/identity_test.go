package quicmux

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestIdentityPersists(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	a, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint != b.Fingerprint {
		t.Fatalf("fingerprint changed across loads: %s then %s", a.Fingerprint, b.Fingerprint)
	}
	st, err := os.Stat(filepath.Join(dir, keyFile))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key mode %v, want 0600", st.Mode().Perm())
	}
	c, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	if c.Fingerprint == a.Fingerprint {
		t.Fatal("two identities share a fingerprint")
	}
}

func TestFingerprintRoundTrip(t *testing.T) {
	id, err := NewEphemeralIdentity()
	if err != nil {
		t.Fatal(err)
	}
	s := id.Fingerprint.String()
	if !strings.HasPrefix(s, "SHA256:") || len(s) != 7+43 {
		t.Fatalf("fingerprint %q is not SHA256: and 43 characters", s)
	}
	got, err := ParseFingerprint(s)
	if err != nil || got != id.Fingerprint {
		t.Fatalf("ParseFingerprint(%q) = %v, %v", s, got, err)
	}
	for _, bad := range []string{"", s[7:], "sha256:" + s[7:], s + "A", s[:len(s)-1], "SHA256:" + strings.Repeat("!", 43)} {
		if _, err := ParseFingerprint(bad); !errors.Is(err, ErrBadFingerprint) {
			t.Errorf("ParseFingerprint(%q) = %v, want ErrBadFingerprint", bad, err)
		}
	}
}

// permitlisten= options after a fingerprint say where that client may have the server listen;
// the rest of the line is its name; a bad option names its line.
func TestAuthorizedClientsPermitListen(t *testing.T) {
	a, _ := NewEphemeralIdentity()
	b, _ := NewEphemeralIdentity()
	in := a.Fingerprint.String() + ` permitlisten=127.0.0.1:8080 permitlisten="localhost:9000-9009" build box` + "\n" + b.Fingerprint.String() + " bob\n"
	set, err := ParseAuthorizedClients(strings.NewReader(in), "test")
	if err != nil {
		t.Fatal(err)
	}
	if set[a.Fingerprint].Name != "build box" || len(set[a.Fingerprint].PermitListen) != 2 || set[b.Fingerprint].Name != "bob" {
		t.Fatalf("parsed %+v", set)
	}
	for _, tt := range []struct {
		fp   Fingerprint
		addr string
		want bool
	}{
		{a.Fingerprint, "127.0.0.1:8080", true},
		{a.Fingerprint, "127.0.0.1:9005", true},
		{a.Fingerprint, "127.0.0.1:8081", false},
		{a.Fingerprint, "0.0.0.0:8080", false},
		{b.Fingerprint, "127.0.0.1:8080", false},
	} {
		if got := set.PermitsListen(tt.fp, netip.MustParseAddrPort(tt.addr)); got != tt.want {
			t.Errorf("PermitsListen(%s, %s) = %v, want %v", set[tt.fp].Name, tt.addr, got, tt.want)
		}
	}
	_, err = ParseAuthorizedClients(strings.NewReader("# x\n"+a.Fingerprint.String()+" permitlisten=db.internal:80\n"), "test")
	if !errors.Is(err, ErrBadRule) || !strings.Contains(err.Error(), "test:2: permitlisten") {
		t.Fatalf("a listen rule with a name: %v, want ErrBadRule naming line 2", err)
	}
}

func TestLoadAuthorizedClients(t *testing.T) {
	a, _ := NewEphemeralIdentity()
	b, _ := NewEphemeralIdentity()
	path := filepath.Join(t.TempDir(), "authorized")
	content := "# team laptops\n" + a.Fingerprint.String() + " alice\n\n   " + b.Fingerprint.String() + "  # bob\n"
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := LoadAuthorizedClients(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(set) != 2 || set[a.Fingerprint].Name != "alice" {
		t.Fatalf("got %v", set)
	}
	if _, ok := set[b.Fingerprint]; !ok {
		t.Fatal("bob missing")
	}
	if err := os.WriteFile(path, []byte(content+"SHA256:nope\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAuthorizedClients(path); err == nil || !strings.Contains(err.Error(), ":5:") {
		t.Fatalf("error %v does not name line 5", err)
	}
	if _, err := LoadAuthorizedClients(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

// FuzzAuthorizedClients: any input either parses, into fingerprints that print back to what
// parses to them, or fails with ErrBadFingerprint naming a line.
func FuzzAuthorizedClients(f *testing.F) {
	id, err := NewEphemeralIdentity()
	if err != nil {
		f.Fatal(err)
	}
	fp := id.Fingerprint.String()
	for _, s := range []string{"", "# none\n", fp + " laptop\n", fp + " permitlisten=127.0.0.1:8080 permitlisten=\"[::1]:9000-9009\" ci\n", fp + " permitlisten=example.com:80\n", fp + "\n\n  # c\n" + fp + " again", "SHA256:abc\n", fp[:20], "\x00" + fp} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		set, err := ParseAuthorizedClients(strings.NewReader(s), "fuzz")
		if err != nil {
			if !errors.Is(err, ErrBadFingerprint) && !errors.Is(err, ErrBadRule) && !strings.Contains(err.Error(), "token too long") {
				t.Fatalf("error %v is neither ErrBadFingerprint, ErrBadRule nor a long line", err)
			}
			return
		}
		for k := range set {
			again, err := ParseFingerprint(k.String())
			if err != nil || again != k {
				t.Fatalf("fingerprint %s prints to %q, which parses to %v, %v", k, k.String(), again, err)
			}
		}
	})
}
