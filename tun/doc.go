// Package tun owns quicgate's TUN device on Linux: it creates the device with wireguard-go's
// tun package (virtio-net header, TSO/GRO offloads, batched reads and writes), gives it its
// MTU and addresses through netlink, routes into it, and removes what it added when it
// closes. FromFD adopts a device another process made (in another network namespace) from
// its descriptor.
//
// Routing is policy routing, as wg-quick does it (policy.go): the routes go into a routing
// table of quicgate's own (Config.Table, DefaultTable 29031 unless set), and one rule per
// address family sends every packet without the table's firewall mark there first; the
// tunnel's own socket carries the mark (Device.Mark) and keeps the host's routes, so a full
// tunnel (0.0.0.0/0, ::/0) neither clashes with the host's default route nor loops into
// itself. The host's own routes are never changed. In that table the package also owns:
//   - throw routes for Config.Exclude, and with Config.KeepConnected for the host's
//     directly connected subnets, which a goroutine keeps in step with the main table
//     while the device is open (connected.go);
//   - throw routes for the server's addresses (Device.Bypass), so that strict reverse-path
//     filtering lets the server's replies in;
//   - the table's lock, an abstract unix socket per network namespace that the kernel
//     releases when the process dies (lock.go), and with it the removal of what a quicgate
//     killed with -9 left in the table.
//
// MainTable keeps the routes in the main table with no rule and no mark: for a device in a
// network namespace of its own.
//
// Open works in the network namespace of the thread that calls it: every netlink socket and
// the lock are made there, so Close and the sync may run on any goroutine.
//
// It knows nothing of the netstack that reads the device or of the tunnel behind it.
package tun
