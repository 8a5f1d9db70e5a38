package ingress

import (
	"context"
	"testing"

	"github.com/sirupsen/logrus"
	"github.com/sirupsen/logrus/hooks/test"

	"github.com/quicgate/quicgate/flow"
	"github.com/quicgate/quicgate/quicmux"
)

// failingTunnel fails every flow the way the client does when the server refuses it.
type failingTunnel struct{ err error }

func (f failingTunnel) Carry(_ context.Context, _ quicmux.Local, done func(flow.Stats, error)) {
	done(flow.Stats{}, f.err)
}

// Every ingress's failed flow is logged at info with its reason, target and peer (TUN flows
// were logged only at debug before they shared this path with -L), and a reset at debug.
func TestFailedFlowIsLogged(t *testing.T) {
	logger, hook := test.NewNullLogger()
	logger.SetLevel(logrus.DebugLevel)
	flows := flow.NewGroup(context.Background())
	target := flow.TargetFromAddrPort(flowTarget)
	refused := &quicmux.StatusError{Status: quicmux.StatusRefused}
	for _, err := range []error{refused, flow.ErrReset} {
		if !flows.Start() {
			t.Fatal("flow group refused a flow")
		}
		carry(failingTunnel{err}, flows, quicmux.Pending{Target: target, Peer: "10.99.0.1:40000"}, logrus.NewEntry(logger))
	}
	entries := hook.AllEntries()
	if len(entries) != 2 {
		t.Fatalf("%d log lines, want 2", len(entries))
	}
	failed, reset := entries[0], entries[1]
	if failed.Level != logrus.InfoLevel || failed.Message != "flow failed" || failed.Data["target"] != target.String() ||
		failed.Data["peer"] != "10.99.0.1:40000" || failed.Data[logrus.ErrorKey] != refused {
		t.Fatalf("refused flow logged as %v %q %v", failed.Level, failed.Message, failed.Data)
	}
	if reset.Level != logrus.DebugLevel || reset.Data["result"] != "reset" {
		t.Fatalf("reset flow logged as %v %q %v", reset.Level, reset.Message, reset.Data)
	}
	if n := flows.Open(); n != 0 {
		t.Fatalf("%d flows still counted open", n)
	}
}
