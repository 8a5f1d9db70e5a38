package wan

import (
	"os"
	"path/filepath"
	"testing"
)

func TestChart(t *testing.T) {
	r := testReport()
	path := filepath.Join(t.TempDir(), "wan.png")
	if err := r.Chart(path); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Size() < 10000 {
		t.Fatalf("chart: %v, %v", st, err)
	}
	if os.Getenv("QGWAN_CHART") != "" { // to look at it: QGWAN_CHART=/tmp/x.png
		_ = r.Chart(os.Getenv("QGWAN_CHART"))
	}
}
