// Package wanlink is a userspace WAN link emulator for benchmarks on hosts without netem: two
// network namespaces, each with a TUN device, joined by a process that moves IP packets
// between the devices and applies, per direction, a rate limit with a tail-drop queue, a
// one-way delay and independent random loss.
//
// Line is the deterministic core (queue, rate, delay, loss) and takes the time as an argument,
// so its tests run on a fake clock. Link puts two Lines between two wireguard-go TUN devices
// created inside the namespaces; with the devices' offloads on, a read returns TCP (TSO) and
// UDP (GSO) super-packets already split into packets of at most the MTU, so the rate, the
// queue and the loss apply per MTU-sized packet, as on a wire. Writes are batched and
// coalesced again by wireguard-go (GRO), which keeps system calls low.
package wanlink
