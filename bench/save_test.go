package bench

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// SaveJSON writes a timestamped copy and <prefix>latest.json, both the same JSON.
func TestSaveJSON(t *testing.T) {
	when := time.Date(2026, 11, 25, 14, 32, 29, 0, time.FixedZone("CET", 3600))
	for _, prefix := range []string{"", "wan-"} {
		dir := filepath.Join(t.TempDir(), "results")
		latest, err := SaveJSON(dir, prefix, when, map[string]int{"flows": 8})
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(dir, prefix+"latest.json"); latest != want {
			t.Fatalf("returned %s, want %s", latest, want)
		}
		for _, name := range []string{prefix + "latest.json", prefix + "20261125T133229Z.json"} {
			b, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]int
			if err := json.Unmarshal(b, &got); err != nil || got["flows"] != 8 {
				t.Fatalf("%s: %s (%v)", name, b, err)
			}
		}
	}
}
