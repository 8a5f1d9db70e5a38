// Package bench measures quicgate next to what users would otherwise pick, on the same work
// and the same machine in one run: direct TCP (the ceiling), a raw quic-go stream (the QUIC
// ceiling), quicgate's -L and TUN modes, ssh -L and socat. It owns the load generator, the
// destination servers, the setup and teardown of each path (processes, throwaway keys,
// network namespaces), and the report: a markdown table with ratios to ssh -L, JSON, and a
// PNG chart. cmd/qgbench is its command.
package bench
