package main

import (
	"fmt"
	"io"

	"github.com/quicgate/quicgate/quicmux"
)

// runFingerprint prints the identity's fingerprint, creating the identity if absent.
func runFingerprint(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("fingerprint", stderr)
	stateDir := fs.String("state-dir", defaultStateDir(), "directory holding this host's identity")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	id, err := quicmux.LoadOrCreateIdentity(*stateDir)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, id.Fingerprint)
	return err
}
