package quicmux

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"
)

// DefaultHostsFile is where the server looks names up before DNS, as the C library does.
const DefaultHostsFile = "/etc/hosts"

// hostsFile resolves names from a hosts(5) file: the operator's own names (localhost among
// them), which Go's resolver does not consult for an absolute name such as "localhost.". It
// reads the file again when its size or modification time changes; a missing file holds no
// names.
type hostsFile struct {
	path string

	mu    sync.Mutex
	mtime time.Time
	size  int64
	names map[string][]netip.Addr // lower-case name without a trailing dot
}

// lookup returns the addresses the file gives name (any case, trailing dot or not).
func (h *hostsFile) lookup(name string) []netip.Addr {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	h.mu.Lock()
	defer h.mu.Unlock()
	fi, err := os.Stat(h.path)
	if err != nil {
		h.names, h.mtime, h.size = nil, time.Time{}, 0
		return nil
	}
	if h.names == nil || !fi.ModTime().Equal(h.mtime) || fi.Size() != h.size {
		data, err := os.ReadFile(h.path)
		if err != nil {
			return nil
		}
		h.names, h.mtime, h.size = parseHosts(data), fi.ModTime(), fi.Size()
	}
	return h.names[name]
}

// parseHosts reads "address name [alias...]" lines; '#' starts a comment, and lines that
// do not start with an address are skipped, as the C library skips them.
func parseHosts(data []byte) map[string][]netip.Addr {
	names := map[string][]netip.Addr{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		a, err := netip.ParseAddr(fields[0])
		if err != nil || a.Zone() != "" {
			continue
		}
		for _, n := range fields[1:] {
			n = strings.ToLower(strings.TrimSuffix(n, "."))
			names[n] = append(names[n], a.Unmap())
		}
	}
	return names
}
