package quicmux

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/third_party/quic-go"
)

// ErrBadFingerprint: a string is not a fingerprint in the form Fingerprint.String gives.
var ErrBadFingerprint = errors.New("quicmux: bad fingerprint")

// Fingerprint is the SHA-256 of an identity's public key (its SubjectPublicKeyInfo), so it
// names the key, not one certificate.
type Fingerprint [sha256.Size]byte

const fingerprintPrefix = "SHA256:"

// String returns the fingerprint as "SHA256:" and unpadded base64, the form OpenSSH prints
// and the only form --pin and the authorized-clients file accept.
func (f Fingerprint) String() string {
	return fingerprintPrefix + base64.RawStdEncoding.EncodeToString(f[:])
}

// ParseFingerprint parses the form String returns.
func ParseFingerprint(s string) (Fingerprint, error) {
	var f Fingerprint
	rest, ok := strings.CutPrefix(s, fingerprintPrefix)
	if !ok {
		return f, fmt.Errorf("%w: %q does not start with %s", ErrBadFingerprint, s, fingerprintPrefix)
	}
	b, err := base64.RawStdEncoding.DecodeString(rest)
	if err != nil || len(b) != len(f) {
		return f, fmt.Errorf("%w: %q is not 43 characters of unpadded base64", ErrBadFingerprint, s)
	}
	copy(f[:], b)
	return f, nil
}

// FingerprintOf returns the fingerprint of a certificate's public key.
func FingerprintOf(cert *x509.Certificate) Fingerprint {
	return sha256.Sum256(cert.RawSubjectPublicKeyInfo)
}

// Identity is a key and the self-signed certificate that carries it.
type Identity struct {
	Cert        tls.Certificate
	Fingerprint Fingerprint
}

// statelessResetKey derives the key for QUIC stateless resets from the identity's private
// key, so a server that restarts with the same identity can tell clients of the connections
// it lost at once (they get a stateless reset for their next packet) instead of leaving them
// to time out.
func (id *Identity) statelessResetKey() (*quic.StatelessResetKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(id.Cert.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("quicmux: identity key: %w", err)
	}
	k := quic.StatelessResetKey(sha256.Sum256(append([]byte("quicgate stateless reset key\x00"), der...)))
	return &k, nil
}

const (
	keyFile  = "key.pem"
	certFile = "cert.pem"
)

// LoadOrCreateIdentity reads the identity in dir, creating dir (mode 0700) and a new
// identity in it if there is none yet.
func LoadOrCreateIdentity(dir string) (*Identity, error) {
	keyPath, certPath := filepath.Join(dir, keyFile), filepath.Join(dir, certFile)
	id, err := loadIdentity(keyPath, certPath)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return id, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("quicmux: state directory: %w", err)
	}
	keyPEM, certPEM, err := newIdentityPEM()
	if err != nil {
		return nil, err
	}
	// The key is written last-but-created-first with O_EXCL so that two processes starting
	// at once cannot each write half an identity.
	if err := writeExclusive(keyPath, keyPEM, 0o600); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return loadIdentityRetry(keyPath, certPath)
		}
		return nil, err
	}
	if err := writeExclusive(certPath, certPEM, 0o644); err != nil {
		return nil, err
	}
	return loadIdentity(keyPath, certPath)
}

// HasIdentity reports whether dir holds an identity's key (LoadOrCreateIdentity would load
// it rather than create one).
func HasIdentity(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, keyFile))
	return err == nil
}

// NewEphemeralIdentity makes an identity that lives in memory only (demos and tests).
func NewEphemeralIdentity() (*Identity, error) {
	keyPEM, certPEM, err := newIdentityPEM()
	if err != nil {
		return nil, err
	}
	return identityFromPEM(certPEM, keyPEM)
}

func loadIdentityRetry(keyPath, certPath string) (*Identity, error) {
	var err error
	for range 50 {
		var id *Identity
		if id, err = loadIdentity(keyPath, certPath); err == nil {
			return id, nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil, err
}

func loadIdentity(keyPath, certPath string) (*Identity, error) {
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("quicmux: identity key: %w", err)
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("quicmux: identity certificate: %w", err)
	}
	id, err := identityFromPEM(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("quicmux: identity in %s: %w", filepath.Dir(keyPath), err)
	}
	return id, nil
}

func identityFromPEM(certPEM, keyPEM []byte) (*Identity, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	return &Identity{Cert: cert, Fingerprint: FingerprintOf(cert.Leaf)}, nil
}

func newIdentityPEM() (keyPEM, certPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "quicgate"},
		NotBefore:    now.Add(-time.Hour),
		// Peers pin the key, not the certificate chain, so a long validity costs nothing.
		NotAfter:    now.AddDate(100, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{"quicgate"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return keyPEM, certPEM, nil
}

func writeExclusive(path string, data []byte, mode os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// AuthorizedClients is the set of client fingerprints a server accepts.
type AuthorizedClients map[Fingerprint]AuthorizedClient

// AuthorizedClient is one line of the authorized-clients file.
type AuthorizedClient struct {
	Name string // the rest of the line, a comment
	// PermitListen are where this client may have the server listen for a reverse forward,
	// besides what the server's own listen rules allow (permitlisten= options).
	PermitListen Rules
}

// PermitsListen reports whether fp's line lets it have the server listen on addr.
func (a AuthorizedClients) PermitsListen(fp Fingerprint, addr netip.AddrPort) bool {
	c, ok := a[fp]
	return ok && c.PermitListen.Allow(flow.TargetFromAddrPort(addr))
}

// LoadAuthorizedClients reads a file of one fingerprint a line, each optionally followed by
// options and a name:
//
//	SHA256:... permitlisten=127.0.0.1:8080 permitlisten=127.0.0.1:9000-9099 alice's laptop
//
// A permitlisten= option (repeatable; its value may be in double quotes, as OpenSSH writes
// it in authorized_keys) is a listen rule (ParseListenRule). Everything after '#' is a
// comment. Errors name the line.
func LoadAuthorizedClients(path string) (AuthorizedClients, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("quicmux: authorized clients: %w", err)
	}
	defer f.Close()
	return ParseAuthorizedClients(f, path)
}

// ParseAuthorizedClients reads the authorized-clients format from r; name is what errors call
// the input.
func ParseAuthorizedClients(r io.Reader, name string) (AuthorizedClients, error) {
	set := AuthorizedClients{}
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		fp, err := ParseFingerprint(fields[0])
		if err != nil {
			return nil, fmt.Errorf("quicmux: %s:%d: %w", name, n, err)
		}
		var c AuthorizedClient
		rest := fields[1:]
		for len(rest) > 0 {
			v, ok := strings.CutPrefix(rest[0], "permitlisten=")
			if !ok {
				break
			}
			r, err := ParseListenRule(strings.Trim(v, `"`))
			if err != nil {
				return nil, fmt.Errorf("quicmux: %s:%d: permitlisten: %w", name, n, err)
			}
			c.PermitListen = append(c.PermitListen, r)
			rest = rest[1:]
		}
		c.Name = strings.Join(rest, " ")
		set[fp] = c
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("quicmux: %s: %w", name, err)
	}
	return set, nil
}
