package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

// servePaced answers /paced?n=BYTES&rate=BYTES_PER_SECOND with the demo body at that rate,
// so that a transfer lasts long enough for a test to change the network under it.
func servePaced(w http.ResponseWriter, r *http.Request) {
	n, err1 := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
	rate, err2 := strconv.ParseInt(r.URL.Query().Get("rate"), 10, 64)
	if err1 != nil || err2 != nil || n < 0 || rate <= 0 {
		http.Error(w, "want n and rate", http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	rc := http.NewResponseController(w)
	body := io.LimitReader(newDemoBody(), n)
	buf := make([]byte, 16<<10)
	start := time.Now()
	var sent int64
	for {
		k, err := body.Read(buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return
			}
			_ = rc.Flush()
			sent += int64(k)
			time.Sleep(time.Until(start.Add(time.Duration(float64(sent) / float64(rate) * float64(time.Second)))))
		}
		if err != nil {
			return
		}
	}
}

// fetchForTest is this test binary run as an app (QUICGATE_TEST_FETCH=url), often inside a
// namespace: it fetches url and prints JSON lines on stderr: "fetch progress" after each
// MiB, then "fetched" with the byte count, the body's SHA-256 and the longest gap between
// two reads (a stall), or "fetch failed". Its exit status is 0 only for a 200 and a whole
// body.
func fetchForTest(url string) int {
	say := func(msg string, fields map[string]any) {
		fields["msg"] = msg
		b, _ := json.Marshal(fields)
		fmt.Fprintln(os.Stderr, string(b))
	}
	resp, err := http.Get(url)
	if err != nil {
		say("fetch failed", map[string]any{"error": err.Error()})
		return 1
	}
	defer resp.Body.Close()
	h := sha256.New()
	buf := make([]byte, 32<<10)
	var got, reported int64
	var stall time.Duration
	last := time.Now()
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			now := time.Now()
			stall = max(stall, now.Sub(last))
			last = now
			h.Write(buf[:n])
			got += int64(n)
			if got-reported >= 1<<20 {
				reported = got
				say("fetch progress", map[string]any{"bytes": got})
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			say("fetch failed", map[string]any{"error": err.Error(), "bytes": got})
			return 1
		}
	}
	say("fetched", map[string]any{"bytes": got, "status": resp.StatusCode, "sha256": hex.EncodeToString(h.Sum(nil)),
		"max_stall_ms": stall.Milliseconds()})
	if resp.StatusCode != http.StatusOK || got != resp.ContentLength {
		return 1
	}
	return 0
}
