package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/ingress"
	"github.com/quicgate/quicgate/quicmux"
)

// runDemo runs server and client in this process on loopback, with throwaway identities and
// a built-in HTTP server as the destination, and fetches through the tunnel.
func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	sizeMiB := fs.Int("size", 256, "MiB of body to fetch through the tunnel")
	var lf logFlags
	lf.register(fs)
	lf.level = "warn"
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *sizeMiB < 1 || *sizeMiB > 1<<14 {
		return usageErr("--size %d: want 1 to 16384 MiB", *sizeMiB)
	}
	log, err := lf.logger(stderr)
	if err != nil {
		return err
	}
	d, err := startDemo(log)
	if err != nil {
		return err
	}
	defer d.close()
	out := func(format string, a ...any) { fmt.Fprintf(stdout, format+"\n", a...) }

	out("quicgate demo: everything on loopback, identities made for this run only")
	out("  destination  HTTP server      %s", d.httpAddr)
	out("  server       quicgate server  udp %s  (fingerprint %s)", d.serverAddr, d.serverFP)
	out("  client       quicgate client  -L %s:%s", d.localAddr, d.httpAddr)
	out("  path: app --tcp--> %s (-L) --QUIC stream--> %s --tcp--> %s", d.localAddr, d.serverAddr, d.httpAddr)
	out("")

	viaPort := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	base := "http://" + d.localAddr
	page, err := fetch(ctx, viaPort, base+"/")
	if err != nil {
		return fmt.Errorf("fetching the page through -L: %w", err)
	}
	out("GET %s/ through -L: %q", base, firstLine(page))

	// The Go API: the same tunnel as an http.Transport's dialer, no local port involved.
	viaAPI := &http.Client{Transport: &http.Transport{DialContext: d.client.DialContext, DisableCompression: true}}
	page, err = fetch(ctx, viaAPI, "http://"+d.httpAddr+"/")
	if err != nil {
		return fmt.Errorf("fetching the page through Client.DialContext: %w", err)
	}
	out("GET http://%s/ through Client.DialContext: %q", d.httpAddr, firstLine(page))

	size := int64(*sizeMiB) << 20
	start := time.Now()
	sum, n, err := fetchSum(ctx, viaPort, base+"/bytes?n="+strconv.FormatInt(size, 10))
	if err != nil {
		return fmt.Errorf("fetching the body through -L: %w", err)
	}
	elapsed := time.Since(start)
	want := demoBodySum(size)
	verdict := "SHA-256 matches"
	if sum != want || n != size {
		verdict = "SHA-256 DIFFERS"
	}
	out("GET %s/bytes through -L: %d bytes in %s = %.2f Gbit/s, %s", base, n, elapsed.Round(time.Millisecond), float64(n)*8/elapsed.Seconds()/1e9, verdict)
	if verdict != "SHA-256 matches" {
		return errors.New("the body arrived damaged")
	}
	out("")
	out("Next: 'make test', or run server and client yourself (see README.md).")
	return nil
}

type demo struct {
	httpSrv    *http.Server
	httpLn     net.Listener
	server     *quicmux.Server
	client     *quicmux.Client
	listener   *ingress.Port
	cancel     context.CancelFunc
	wg         sync.WaitGroup
	httpAddr   string
	serverAddr string
	serverFP   quicmux.Fingerprint
	localAddr  string
}

func startDemo(log *logrus.Entry) (*demo, error) {
	d := &demo{}
	ok := false
	defer func() {
		if !ok {
			d.close()
		}
	}()
	var err error
	if d.httpLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	d.httpAddr = d.httpLn.Addr().String()
	d.httpSrv = &http.Server{Handler: demoHandler(), ReadHeaderTimeout: 10 * time.Second}
	d.wg.Add(1)
	go func() { defer d.wg.Done(); _ = d.httpSrv.Serve(d.httpLn) }()

	serverID, err := quicmux.NewEphemeralIdentity()
	if err != nil {
		return nil, err
	}
	clientID, err := quicmux.NewEphemeralIdentity()
	if err != nil {
		return nil, err
	}
	httpAP := netip.MustParseAddrPort(d.httpAddr)
	d.server, err = quicmux.NewServer(quicmux.ServerConfig{
		Identity:   serverID,
		Authorized: func(fp quicmux.Fingerprint) bool { return fp == clientID.Fingerprint },
		Policy:     quicmux.Rules{{Prefix: netip.PrefixFrom(httpAP.Addr(), 32), PortLo: httpAP.Port(), PortHi: httpAP.Port()}},
		Logger:     log.WithField("side", "server"),
	})
	if err != nil {
		return nil, err
	}
	addr, err := d.server.Listen("127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d.serverAddr, d.serverFP = addr.String(), serverID.Fingerprint
	d.client, err = quicmux.NewClient(quicmux.ClientConfig{
		Server: d.serverAddr, Identity: clientID, Pin: serverID.Fingerprint,
		Logger: log.WithField("side", "client"),
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.client.Connect(ctx); err != nil {
		return nil, err
	}
	fwd := ingress.LocalForward{Bind: netip.MustParseAddrPort("127.0.0.1:0"), Target: flow.TargetFromAddrPort(httpAP)}
	if d.listener, err = ingress.ListenPort(fwd, d.client, ingress.Options{Logger: log.WithField("side", "client")}); err != nil {
		return nil, err
	}
	d.localAddr = d.listener.Addr().String()
	var sctx context.Context
	sctx, d.cancel = context.WithCancel(context.Background())
	d.wg.Add(1)
	go func() { defer d.wg.Done(); _ = d.listener.Serve(sctx) }()
	ok = true
	return d, nil
}

func (d *demo) close() {
	if d.cancel != nil {
		d.cancel()
	}
	if d.httpSrv != nil {
		_ = d.httpSrv.Close()
	}
	d.wg.Wait()
	if d.client != nil {
		_ = d.client.Close()
	}
	if d.server != nil {
		_ = d.server.Close()
	}
}

// demoHandler serves a small page at / and n deterministic bytes at /bytes?n=.
func demoHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the far side of the tunnel; you came from %s\n", r.RemoteAddr)
	})
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		if err != nil || n < 0 {
			http.Error(w, "bad n", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		_, _ = io.Copy(w, io.LimitReader(newDemoBody(), n))
	})
	return mux
}

// demoBody is an endless stream of pseudo-random bytes: a 1 MiB block from a fixed seed, repeated.
type demoBody struct {
	block []byte
	off   int
}

var demoBlock = sync.OnceValue(func() []byte {
	b := make([]byte, 1<<20)
	r := rand.NewChaCha8([32]byte{'q', 'u', 'i', 'c', 'g', 'a', 't', 'e'})
	_, _ = r.Read(b)
	return b
})

func newDemoBody() *demoBody { return &demoBody{block: demoBlock()} }

func (d *demoBody) Read(p []byte) (int, error) {
	n := copy(p, d.block[d.off:])
	d.off = (d.off + n) % len(d.block)
	return n, nil
}

func demoBodySum(n int64) [32]byte {
	h := sha256.New()
	_, _ = io.Copy(h, io.LimitReader(newDemoBody(), n))
	return [32]byte(h.Sum(nil))
}

func fetch(ctx context.Context, c *http.Client, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return string(b), err
}

func fetchSum(ctx context.Context, c *http.Client, url string) ([32]byte, int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return [32]byte{}, 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return [32]byte{}, 0, err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	return [32]byte(h.Sum(nil)), n, err
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
