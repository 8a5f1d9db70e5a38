package quicmux

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"

	"github.com/quicgate/quicgate/flow"
)

func TestRequestRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		req  Request
		len  int
	}{
		{"ping", Request{Kind: KindPing}, 4},
		{"ipv4", Request{Kind: KindTCP, Target: flow.Target{Addr: netip.MustParseAddr("10.1.2.3"), Port: 80}}, 4 + 1 + 4 + 2},
		{"ipv6", Request{Kind: KindTCP, Target: flow.Target{Addr: netip.MustParseAddr("fd00::5"), Port: 443}}, 4 + 1 + 16 + 2},
		{"domain", Request{Kind: KindTCP, Target: flow.Target{Host: "example.com", Port: 8080}}, 4 + 1 + 1 + 11 + 2},
		{"longest domain", Request{Kind: KindTCP, Target: flow.Target{Host: longName(253), Port: 1}}, 4 + 1 + 1 + 253 + 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := AppendRequest(nil, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) != tt.len {
				t.Fatalf("encoded %d bytes, want %d", len(b), tt.len)
			}
			payload := []byte("payload right behind the header")
			r := bytes.NewReader(append(b, payload...))
			got, err := ReadRequest(r)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.req {
				t.Fatalf("got %+v, want %+v", got, tt.req)
			}
			rest, _ := io.ReadAll(r)
			if !bytes.Equal(rest, payload) {
				t.Fatalf("ReadRequest consumed payload: left %q", rest)
			}
		})
	}
}

// The examples in docs/protocol.md, byte for byte.
func TestRequestDocumentedBytes(t *testing.T) {
	v6 := "01001401" + "04" + "fd000000000000000000000000000005" + "01bb"
	tests := []struct {
		target, hex string
	}{
		{"127.0.0.1:80", "0100080101" + "7f000001" + "0050"},
		{"[fd00::5]:443", v6},
		{"example.com:22", "0100100103" + "0b" + hex.EncodeToString([]byte("example.com")) + "0016"},
	}
	for _, tt := range tests {
		tgt, err := flow.ParseTarget(tt.target)
		if err != nil {
			t.Fatal(err)
		}
		b, err := AppendRequest(nil, Request{Kind: KindTCP, Target: tgt})
		if err != nil {
			t.Fatal(err)
		}
		if got := hex.EncodeToString(b); got != tt.hex {
			t.Errorf("%s: %s, documented %s", tt.target, got, tt.hex)
		}
	}
	if b, _ := AppendRequest(nil, Request{Kind: KindPing}); hex.EncodeToString(b) != "01000100" {
		t.Errorf("ping: %x", b)
	}
	listen := Request{Kind: KindListen, Target: flow.Target{Addr: netip.MustParseAddr("127.0.0.1"), Port: 8080}}
	if b, _ := AppendRequest(nil, listen); hex.EncodeToString(b) != "0100080201"+"7f000001"+"1f90" {
		t.Errorf("listen 127.0.0.1:8080: %x", b)
	}
}

// Listen and accepted headers round-trip; a listen on a name, an accepted header without its
// listener, and a name as an accepted connection's source are bad requests.
func TestReverseHeaders(t *testing.T) {
	for _, r := range []Request{
		{Kind: KindListen, Target: flow.Target{Addr: netip.MustParseAddr("::1"), Port: 9000}},
		{Kind: KindAccepted, Listener: 1<<62 - 1, Target: flow.Target{Addr: netip.MustParseAddr("10.0.0.7"), Port: 51000}},
	} {
		b, err := AppendRequest(nil, r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ReadRequest(bytes.NewReader(b))
		if err != nil || got != r {
			t.Fatalf("%+v read back as %+v, %v", r, got, err)
		}
	}
	for _, r := range []Request{
		{Kind: KindListen, Target: flow.Target{Host: "example.com", Port: 80}},
		{Kind: KindAccepted, Target: flow.Target{Host: "example.com", Port: 80}},
	} {
		if _, err := AppendRequest(nil, r); !errors.Is(err, ErrBadTarget) {
			t.Errorf("AppendRequest(%+v): %v, want ErrBadTarget", r, err)
		}
	}
	for _, h := range []string{
		"0100100203" + "0b" + hex.EncodeToString([]byte("example.com")) + "0050", // listen on a name
		"010002" + "03" + "00",                   // accepted, no listener
		"01000a03" + "0000000000000001" + "0101", // accepted, no address
	} {
		b, _ := hex.DecodeString(h)
		if _, err := ReadRequest(bytes.NewReader(b)); !errors.Is(err, ErrBadRequest) {
			t.Errorf("ReadRequest(%s): %v, want ErrBadRequest", h, err)
		}
	}
}

func TestAppendRequestRejects(t *testing.T) {
	for _, req := range []Request{
		{Kind: KindTCP},
		{Kind: KindTCP, Target: flow.Target{Host: "a..b", Port: 1}},
		{Kind: KindTCP, Target: flow.Target{Host: longName(254), Port: 1}},
		{Kind: KindTCP, Target: flow.Target{Addr: netip.MustParseAddr("1.2.3.4"), Port: 0}},
		{Kind: 7, Target: flow.Target{Host: "x", Port: 1}},
	} {
		if b, err := AppendRequest([]byte("keep"), req); err == nil || string(b) != "keep" {
			t.Errorf("AppendRequest(%+v) = %q, %v; want an error and b unchanged", req, b, err)
		}
	}
}

func TestReadRequestMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"short preamble", []byte{1, 0}},
		{"bad version", []byte{2, 0, 1, 0}},
		{"zero length", []byte{1, 0, 0}},
		{"oversized length", []byte{1, 0xff, 0xff}},
		{"truncated body", []byte{1, 0, 8, 1, 1, 10}},
		{"unknown kind", []byte{1, 0, 1, 9}},
		{"ping with trailing bytes", []byte{1, 0, 2, 0, 0}},
		{"no address", []byte{1, 0, 1, 1}},
		{"ipv4 too short", []byte{1, 0, 6, 1, 1, 10, 0, 0, 80}},
		{"ipv6 too short", []byte{1, 0, 8, 1, 4, 0, 0, 0, 0, 0, 80}},
		{"domain length mismatch", []byte{1, 0, 7, 1, 3, 5, 'a', 'b', 0, 80}},
		{"bad domain", []byte{1, 0, 7, 1, 3, 2, 'a', '/', 0, 80}},
		{"unknown address type", []byte{1, 0, 7, 1, 9, 1, 2, 3, 0, 80}},
		{"port zero", []byte{1, 0, 8, 1, 1, 10, 0, 0, 1, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadRequest(bytes.NewReader(tt.in))
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("err = %v, want ErrBadRequest", err)
			}
		})
	}
}

func TestStatusRoundTrip(t *testing.T) {
	for s := StatusOK; s <= StatusShuttingDown; s++ {
		err := ReadStatus(bytes.NewReader(AppendStatus(nil, s)))
		if s == StatusOK {
			if err != nil {
				t.Fatalf("ok: %v", err)
			}
			continue
		}
		var se *StatusError
		if !errors.As(err, &se) || se.Status != s {
			t.Fatalf("%v: got %v", s, err)
		}
	}
	for _, in := range [][]byte{nil, {1}, {2, 0}, {1, 99}} {
		if err := ReadStatus(bytes.NewReader(in)); !errors.Is(err, ErrProtocol) {
			t.Errorf("ReadStatus(%v) = %v, want ErrProtocol", in, err)
		}
	}
}

// Every status the server can answer is a rejection of the flow, whichever sentinel it also
// matches: flow.Result names it "rejected".
func TestStatusErrorIsRejected(t *testing.T) {
	for s := StatusRefused; int(s) < len(statusNames); s++ {
		err := fmt.Errorf("flow to x: %w", &StatusError{Status: s})
		if !errors.Is(err, flow.ErrRejected) || flow.Result(err) != "rejected" {
			t.Errorf("status %v: matches flow.ErrRejected %v, result %q", s, errors.Is(err, flow.ErrRejected), flow.Result(err))
		}
	}
}

// FuzzReadRequest: any input either fails with ErrBadRequest or decodes to a request that
// encodes back to the bytes it was read from.
func FuzzReadRequest(f *testing.F) {
	for _, req := range []Request{
		{Kind: KindPing},
		{Kind: KindTCP, Target: flow.Target{Addr: netip.MustParseAddr("127.0.0.1"), Port: 80}},
		{Kind: KindTCP, Target: flow.Target{Addr: netip.MustParseAddr("fd00:99::5"), Port: 443}},
		{Kind: KindTCP, Target: flow.Target{Host: "example.com", Port: 22}},
	} {
		b, _ := AppendRequest(nil, req)
		f.Add(b)
	}
	f.Add([]byte{1, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		req, err := ReadRequest(r)
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error %v does not wrap ErrBadRequest", err)
			}
			return
		}
		consumed := in[:len(in)-r.Len()]
		if len(consumed) > MaxHeaderLen {
			t.Fatalf("consumed %d bytes, more than MaxHeaderLen", len(consumed))
		}
		again, err := AppendRequest(nil, req)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", req, err)
		}
		// Names are lower-cased on decode, so compare case-insensitively.
		if !strings.EqualFold(string(again), string(consumed)) {
			t.Fatalf("re-encoding differs:\n in  %x\n out %x", consumed, again)
		}
	})
}

func longName(n int) string {
	var b strings.Builder
	for b.Len() < n {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(strings.Repeat("a", min(63, n-b.Len()-1+1)))
	}
	return b.String()[:n]
}
