package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/crypto/curve25519"
	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// UDPWireGuardPathName names the UDP row of the reference peer: wireguard-go (the userspace
// WireGuard, whose TUN code quicgate uses too) between two TUN devices, in the quicgate TUN
// row's topology.
const UDPWireGuardPathName = "wireguard-go UDP"

// wgKeys makes a WireGuard key pair: a clamped Curve25519 private key and its public key.
func wgKeys() (priv, pub [32]byte, err error) {
	if _, err = rand.Read(priv[:]); err != nil {
		return
	}
	priv[0] &= 248
	priv[31] = (priv[31] & 127) | 64
	p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	copy(pub[:], p)
	return
}

// udpThroughWireGuard measures UDP through wireguard-go between namespace A (the sender,
// 10.98.0.0/16 routed into its wg0) and B (the sink on 10.98.0.5 behind its wg0), over the
// same veth as the quicgate TUN row: the reference users know for a userspace UDP tunnel.
func udpThroughWireGuard(ctx context.Context, env *Env, opt Options, measure udpMeasure) []UDPResult {
	const name = "wireguard-go"
	if os.Geteuid() != 0 {
		return []UDPResult{{Path: name, Skipped: "needs root"}}
	}
	id := strconv.Itoa(os.Getpid())
	a, b := "qgwA"+id, "qgwB"+id
	defer delNetns(a, b)
	fail := func(err error) []UDPResult { return []UDPResult{{Path: name, Error: err.Error()}} }
	if err := twoNamespaces(a, b, "qgwa"+id, "qgwb"+id); err != nil {
		return fail(err)
	}
	privA, pubA, err := wgKeys()
	if err != nil {
		return fail(err)
	}
	privB, pubB, err := wgKeys()
	if err != nil {
		return fail(err)
	}
	start := func(ns, addr, route string, priv, peer [32]byte, endpoint, allowed string) (*Proc, error) {
		args := []string{"netns", "exec", ns, env.Self, "wg", "--addr", addr, "--route", route, "--private", hex.EncodeToString(priv[:]),
			"--peer", hex.EncodeToString(peer[:]), "--allowed", allowed, "--listen", "51820"}
		if endpoint != "" {
			args = append(args, "--endpoint", endpoint)
		}
		p, err := StartProc("wireguard-go in "+ns, exec.Command("ip", args...))
		if err != nil {
			return nil, err
		}
		if _, err := p.WaitJSON("wg ready", 10*time.Second); err != nil {
			p.Stop()
			return nil, err
		}
		return p, nil
	}
	wgB, err := start(b, "10.97.0.2/24", "", privB, pubA, "", "10.97.0.0/24")
	if err != nil {
		return fail(err)
	}
	defer wgB.Stop()
	wgA, err := start(a, "10.97.0.1/24", "10.98.0.0/16", privA, pubB, "10.201.0.2:51820", "10.98.0.0/16")
	if err != nil {
		return fail(err)
	}
	defer wgA.Stop()
	nsA, err := netns.GetFromName(a)
	if err != nil {
		return fail(err)
	}
	defer nsA.Close()
	if err := measureAcross(name, nsA, b, opt, measure); err != nil {
		return fail(err)
	}
	return nil
}

// WireGuard runs wireguard-go on a TUN device of its own, in the caller's network
// namespace, until SIGTERM or SIGINT (qgbench's "wg" command, started by the bench in a
// namespace it made): args are --addr CIDR, --route CIDR (optional), --private and --peer
// (hex keys), --allowed CIDR, --listen PORT, --endpoint HOST:PORT (optional). It prints one
// JSON line, {"msg":"wg ready"}, once the device is up.
func WireGuard(args []string) error {
	get := func(name string) string {
		for i := 0; i+1 < len(args); i += 2 {
			if args[i] == "--"+name {
				return args[i+1]
			}
		}
		return ""
	}
	dev, err := wgtun.CreateTUN("wg0", 1420)
	if err != nil {
		return err
	}
	d := device.NewDevice(dev, conn.NewDefaultBind(), device.NewLogger(device.LogLevelError, "wg: "))
	defer d.Close()
	conf := fmt.Sprintf("private_key=%s\nlisten_port=%s\npublic_key=%s\nallowed_ip=%s\n", get("private"), get("listen"), get("peer"), get("allowed"))
	if e := get("endpoint"); e != "" {
		conf += "endpoint=" + e + "\npersistent_keepalive_interval=1\n"
	}
	if err := d.IpcSet(conf); err != nil {
		return err
	}
	if err := d.Up(); err != nil {
		return err
	}
	for _, c := range [][]string{{"addr", "add", get("addr"), "dev", "wg0"}, {"link", "set", "wg0", "up"}} {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	if r := get("route"); r != "" {
		if out, err := exec.Command("ip", "route", "add", r, "dev", "wg0").CombinedOutput(); err != nil {
			return fmt.Errorf("ip route add %s: %v: %s", r, err, out)
		}
	}
	fmt.Fprintln(os.Stderr, `{"msg":"wg ready"}`)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-sig:
	case <-d.Wait():
		return errors.New("the device stopped")
	}
	return nil
}
