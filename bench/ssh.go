package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// SSH is an ssh -L setup ready to start: throwaway host and user keys and an sshd_config in
// one directory. The loopback bench and the WAN bench (bench/wan) share it.
type SSH struct {
	SSHD    string // the sshd binary
	Config  string // sshd_config
	UserKey string // the client's private key
	Port    int
}

// PrepareSSH checks that sshd and ssh are here and root runs us (else an ErrSkip), makes the
// keys in dir and writes an sshd_config for listen:port.
func PrepareSSH(dir, listen string, port int) (*SSH, error) {
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		sshd = "/usr/sbin/sshd"
		if _, err := os.Stat(sshd); err != nil {
			return nil, skip("no sshd ('make bench-deps' installs openssh-server)")
		}
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		return nil, skip("no ssh client ('make bench-deps' installs openssh-client)")
	}
	if os.Geteuid() != 0 {
		return nil, skip("sshd needs root here")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	for _, k := range []string{"host", "user"} {
		_ = os.Remove(filepath.Join(dir, k))
		_ = os.Remove(filepath.Join(dir, k+".pub"))
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", filepath.Join(dir, k)).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ssh-keygen: %v: %s", err, out)
		}
	}
	pub, err := os.ReadFile(filepath.Join(dir, "user.pub"))
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf("ListenAddress %s\nPort %d\nHostKey %s\nAuthorizedKeysFile %s\nPermitRootLogin prohibit-password\n"+
		"PasswordAuthentication no\nUsePAM no\nStrictModes no\nPidFile %s\nMaxStartups 100\nLogLevel ERROR\n",
		listen, port, filepath.Join(dir, "host"), filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid"))
	s := &SSH{SSHD: sshd, Config: filepath.Join(dir, "sshd_config"), UserKey: filepath.Join(dir, "user"), Port: port}
	if err := os.WriteFile(s.Config, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	_ = os.MkdirAll("/run/sshd", 0o755) // sshd's privilege-separation directory
	return s, nil
}

// ServerArgs is sshd's command line, in the foreground, logging to stderr.
func (s *SSH) ServerArgs() []string { return []string{s.SSHD, "-D", "-e", "-f", s.Config} }

// ClientArgs is the ssh command line for the forwards (each "bind:port:host:hostport") to
// root@host, with no command, no host key prompt and no password.
func (s *SSH) ClientArgs(host string, forwards ...string) []string {
	args := []string{"ssh", "-N", "-T", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
		"-o", "BatchMode=yes", "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR", "-i", s.UserKey, "-p", strconv.Itoa(s.Port)}
	for _, f := range forwards {
		args = append(args, "-L", f)
	}
	return append(args, "root@"+host)
}

// startSSHD prepares an sshd on a free loopback port in dir and starts it.
func startSSHD(dir string) (*SSH, *Proc, error) {
	port, err := freePort()
	if err != nil {
		return nil, nil, err
	}
	s, err := PrepareSSH(dir, "127.0.0.1", port)
	if err != nil {
		return nil, nil, err
	}
	sshd, err := StartProc("sshd", exec.Command(s.ServerArgs()[0], s.ServerArgs()[1:]...))
	if err != nil {
		return nil, nil, err
	}
	if err := waitTCP(fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second); err != nil {
		sshd.Stop()
		return nil, nil, fmt.Errorf("sshd: %w: %s", err, sshd.Tail())
	}
	return s, sshd, nil
}
