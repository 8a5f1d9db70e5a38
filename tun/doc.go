// Package tun owns quicgate's TUN device on Linux: it creates the device with wireguard-go's
// tun package (virtio-net header, TSO/GRO offloads, batched reads and writes), gives it its
// MTU, addresses and routes through netlink, and removes what it added when it closes.
// FromFD adopts a device another process made (in another network namespace) from its
// descriptor.
//
// It knows nothing of the netstack that reads the device or of the tunnel behind it.
package tun
