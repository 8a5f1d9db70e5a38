package quicmux

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/sirupsen/logrus"
)

// errNoCertificate: the peer sent no certificate.
var errNoCertificate = errors.New("quicmux: peer sent no certificate")

func peerFingerprint(rawCerts [][]byte) (Fingerprint, error) {
	if len(rawCerts) == 0 {
		return Fingerprint{}, errNoCertificate
	}
	cert, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return Fingerprint{}, fmt.Errorf("quicmux: peer certificate: %w", err)
	}
	return FingerprintOf(cert), nil
}

// PinError says which key the server presented instead of the pinned one.
type PinError struct{ Got, Want Fingerprint }

func (e *PinError) Error() string {
	return fmt.Sprintf("presented %s, but the pin is %s", e.Got, e.Want)
}

// Is makes a PinError match ErrPinMismatch.
func (e *PinError) Is(target error) bool { return target == ErrPinMismatch }

// clientTLS pins the server's key: the chain is not checked against any CA, only the
// fingerprint of the leaf's public key.
func clientTLS(id *Identity, pin Fingerprint) *tls.Config {
	return &tls.Config{
		Certificates:       []tls.Certificate{id.Cert},
		NextProtos:         []string{ALPN},
		ServerName:         "quicgate",
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // replaced by the pin check below
		VerifyPeerCertificate: func(rawCerts [][]byte, _ [][]*x509.Certificate) error {
			fp, err := peerFingerprint(rawCerts)
			if err != nil {
				return err
			}
			if fp != pin {
				return &PinError{Got: fp, Want: pin}
			}
			return nil
		},
	}
}

// serverTLS demands a client certificate whose key is authorized, and logs each rejection
// once with the peer's address and fingerprint.
func serverTLS(id *Identity, authorized func(Fingerprint) bool, log *logrus.Entry, onReject func(reason string)) *tls.Config {
	base := &tls.Config{
		Certificates: []tls.Certificate{id.Cert},
		NextProtos:   []string{ALPN},
		MinVersion:   tls.VersionTLS13,
		ClientAuth:   tls.RequireAnyClientCert,
	}
	base.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		var peer string
		if hello.Conn != nil {
			peer = hello.Conn.RemoteAddr().String()
		}
		conf := base.Clone()
		conf.GetConfigForClient = nil
		// VerifyConnection, not VerifyPeerCertificate: it runs on every handshake, resumed
		// ones included (their certificates come from the session ticket), so a client
		// removed from the authorized list cannot come back with a ticket it kept.
		conf.VerifyConnection = func(cs tls.ConnectionState) error {
			var raw [][]byte
			for _, c := range cs.PeerCertificates {
				raw = append(raw, c.Raw)
			}
			fp, err := peerFingerprint(raw)
			if err != nil {
				log.WithField("peer", peer).WithError(err).Warn("client rejected")
				onReject("no_certificate")
				return err
			}
			if !authorized(fp) {
				log.WithFields(logrus.Fields{"peer": peer, "fingerprint": fp.String(), "resumed": cs.DidResume}).Warn("client rejected: fingerprint not authorized")
				onReject("unauthorized")
				return fmt.Errorf("%w: %s", ErrUnauthorized, fp)
			}
			return nil
		}
		return conf, nil
	}
	return base
}
