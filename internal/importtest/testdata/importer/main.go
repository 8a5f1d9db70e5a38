// Command importer is a program that uses quicgate as a library, built by
// internal/importtest in a module of its own. It takes a directory, loads (or creates) a
// quicmux identity in it and builds a client configuration with it, then starts a QUIC
// client and prints what it saw:
//
//	fingerprint SHA256:...
//	max_udp_payload_size N
//
// N is the max_udp_payload_size transport parameter the client advertises, which quic-go
// sets to its protocol.MaxPacketBufferSize: 1452 upstream, larger in quicgate's patched copy.
// The client also selects BBR through quic.Config.Congestion, which only the patched copy has.
// The client records its own transport parameters when the connection is created, before
// anything is sent, so the peer, a loopback UDP socket, never has to answer.
package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/quicgate/quicgate/quicmux"
	"github.com/quicgate/quicgate/third_party/quic-go"
	"github.com/quicgate/quicgate/third_party/quic-go/qlog"
	"github.com/quicgate/quicgate/third_party/quic-go/qlogwriter"
)

// trace passes on the max_udp_payload_size of the local transport parameters.
type trace struct{ maxUDPPayloadSize chan<- int64 }

func (t trace) AddProducer() qlogwriter.Recorder { return t }
func (trace) Close() error                       { return nil }

func (t trace) RecordEvent(e qlogwriter.Event) {
	if p, ok := e.(qlog.ParametersSet); ok && p.Initiator == qlog.InitiatorLocal {
		select {
		case t.maxUDPPayloadSize <- int64(p.MaxUDPPayloadSize):
		default:
		}
	}
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "importer:", err)
		os.Exit(1)
	}
}

func run() error {
	if len(os.Args) != 2 {
		return fmt.Errorf("usage: importer <identity directory>")
	}
	id, err := quicmux.LoadOrCreateIdentity(os.Args[1])
	if err != nil {
		return err
	}
	pin, err := quicmux.ParseFingerprint(id.Fingerprint.String())
	if err != nil {
		return err
	}
	peer, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return err
	}
	defer peer.Close()
	cfg := quicmux.ClientConfig{Server: peer.LocalAddr().String(), Identity: id, Pin: pin, DialTimeout: time.Second}
	fmt.Println("fingerprint", cfg.Identity.Fingerprint)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := make(chan int64, 1)
	conf := &quic.Config{
		Congestion: quic.CongestionBBR, // only the fork has it: upstream would not compile
		Tracer: func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace {
			return trace{maxUDPPayloadSize: got}
		},
	}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{cfg.Identity.Cert}, InsecureSkipVerify: true, NextProtos: []string{quicmux.ALPN}}
	dialed := make(chan error, 1)
	go func() {
		conn, err := quic.DialAddr(ctx, cfg.Server, tlsConf, conf)
		if err == nil {
			conn.CloseWithError(0, "")
		}
		dialed <- err
	}()
	select {
	case n := <-got:
		fmt.Println("max_udp_payload_size", n)
	case err := <-dialed:
		return fmt.Errorf("the client recorded no transport parameters (dial: %v)", err)
	case <-ctx.Done():
		return fmt.Errorf("the client recorded no transport parameters: %w", ctx.Err())
	}
	cancel()
	<-dialed
	return nil
}
