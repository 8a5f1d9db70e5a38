// Package importtest holds a test, and nothing else, that a program importing quicgate as
// a library builds against quicgate's patched quic-go.
//
// quicgate carries a patched copy of quic-go v0.65.0 in third_party/quic-go, as packages of
// its own module (github.com/quicgate/quicgate/third_party/quic-go) rather than through a
// replace directive, because a replace in quicgate's go.mod would apply only when quicgate
// is the main module: a program that imported quicmux would build it against upstream
// quic-go. The test builds such a program (testdata/importer) in a throwaway module that
// requires github.com/quicgate/quicgate (replaced by this checkout, as a published version
// would be fetched), checks that its packages include the fork and not upstream quic-go,
// and runs it: it prints the max_udp_payload_size its QUIC client advertises, which is the
// patched protocol.MaxPacketBufferSize (16383) and not upstream's 1452. The program also
// sets quic.Config.Congestion, which only the patched copy has, so it would not compile
// against upstream quic-go at all.
package importtest
