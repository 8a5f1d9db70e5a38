package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// versionLine names this build: the module version (or "(devel)"), the VCS revision and
// time with "+dirty" for uncommitted changes, the Go version and the platform.
func versionLine() string {
	version, rev := "(unknown)", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		var vcsRev, vcsTime, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				vcsRev = s.Value
			case "vcs.time":
				vcsTime = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "+dirty"
				}
			}
		}
		// Go 1.24+ stamps a VCS build with a pseudo-version that names the revision already;
		// say it separately only when the version does not.
		if vcsRev != "" && !strings.Contains(version, vcsRev[:min(12, len(vcsRev))]) {
			if len(vcsRev) > 12 {
				vcsRev = vcsRev[:12]
			}
			rev = fmt.Sprintf(" revision %s%s %s", vcsRev, dirty, vcsTime)
		}
	}
	return fmt.Sprintf("quicgate %s%s, %s %s/%s", version, rev, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func runVersion(args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return usageErr("version takes no arguments")
	}
	_, err := fmt.Fprintln(stdout, versionLine())
	return err
}
