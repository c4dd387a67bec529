package observability_test

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/observability"
)

// TestMetricsWithKnownLabelsStartAtZero: series whose label values are known
// in advance exist from the start, so that an alert on increase() sees the
// first event.
func TestMetricsWithKnownLabelsStartAtZero(t *testing.T) {
	t.Parallel()
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		n    int
	}{
		{"pacer_lease_keepalives_total", len(observability.KeepaliveResults)},
		{"pacer_leader_transitions_total", 2},
		{"pacer_lease_keepalive_age_seconds", 1},
	} {
		if got, err := testutil.GatherAndCount(m.Registry, c.name); err != nil || got != c.n {
			t.Errorf("%s: %d series (%v), want %d", c.name, got, err, c.n)
		}
	}
}
