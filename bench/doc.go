// Package bench measures quicgate next to what users would otherwise pick, on the same work
// and the same machine in one run: direct TCP (the ceiling), a raw quic-go stream (the QUIC
// ceiling), a plain Go TCP relay (the ceiling for any Go -L design: its TCP work and nothing
// else), quicgate's -L, TUN and -D modes, ssh -L, ssh -D and socat (the -D rows measure one
// flow and the new-flow rate only: once open, their flows are relayed as -L's and ssh -L's
// are). It owns the load generator, the destination servers, the setup and teardown of each
// path (processes, throwaway keys, network namespaces), and the report: a markdown table
// with ratios to ssh -L, the targets (each with what the relay gets on the same ratio), JSON,
// and a PNG chart. cmd/qgbench is its command.
package bench
