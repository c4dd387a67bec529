package coord

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The quota comes from the member's Status when it reports one (etcd 3.6),
// else from its /metrics, read again only after quotaRefresh, else it is
// unknown, with the reason: never a guessed default.
func TestQuotaFallbackOrder(t *testing.T) {
	var (
		hits  atomic.Int64
		quota atomic.Int64
		fail  atomic.Bool
	)
	quota.Store(16 << 20)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path != "/metrics" || fail.Load() {
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "# HELP etcd_server_quota_backend_bytes Current backend storage quota size in bytes.\n"+
			"# TYPE etcd_server_quota_backend_bytes gauge\netcd_server_quota_backend_bytes %g\n"+
			"# TYPE etcd_server_has_leader gauge\netcd_server_has_leader 1\n", float64(quota.Load()))
	}))
	defer srv.Close()
	q := newQuotaReader(nil, 5*time.Second)
	ctx, now := context.Background(), time.Now()
	step := func(name string, at time.Time, reported, want int64, wantHits int64, wantErr string) {
		t.Helper()
		got, err := q.quota(ctx, 7, srv.URL, reported, at)
		if got != want || hits.Load() != wantHits || (err == nil) != (wantErr == "") || (err != nil && !strings.Contains(err.Error(), wantErr)) {
			t.Fatalf("%s: quota %d, error %v, %d /metrics reads; want %d, error %q, %d reads", name, got, err, hits.Load(), want, wantErr, wantHits)
		}
	}
	step("reported by Status", now, 64<<20, 64<<20, 0, "")
	step("not reported: /metrics", now, 0, 16<<20, 1, "")
	quota.Store(32 << 20)
	step("kept", now.Add(quotaRefresh-time.Second), 0, 16<<20, 1, "")
	step("read again", now.Add(quotaRefresh), 0, 32<<20, 2, "")
	fail.Store(true)
	step("kept, not read again", now.Add(quotaRefresh+time.Minute), 0, 32<<20, 2, "")
	step("unknown", now.Add(2*quotaRefresh), 0, 0, 3, "500 Internal Server Error")
	step("asked again at the next look", now.Add(2*quotaRefresh+time.Second), 0, 0, 4, "500")
	fail.Store(false)
	quota.Store(-1)
	step("no quota", now.Add(2*quotaRefresh+2*time.Second), 0, 0, 5, "has no space quota")
	step("Status first, even so", now, 8<<20, 8<<20, 5, "")
}

// A member's client endpoint (a URL, or host:port reached over TLS when
// the client has TLS settings) gives its /metrics URL.
func TestQuotaMetricsURL(t *testing.T) {
	for _, tc := range []struct {
		endpoint string
		tls      bool
		want     string
	}{
		{"http://127.0.0.1:2379", false, "http://127.0.0.1:2379/metrics"},
		{"https://etcd-0.etcd:2379", true, "https://etcd-0.etcd:2379/metrics"},
		{"http://user:secret@e:2379/", false, "http://e:2379/metrics"},
		{"127.0.0.1:2379", false, "http://127.0.0.1:2379/metrics"},
		{"etcd:2379", true, "https://etcd:2379/metrics"},
		{"unix:///run/etcd.sock", false, ""},
	} {
		var tc0 *tls.Config
		if tc.tls {
			tc0 = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		got, err := newQuotaReader(tc0, time.Second).metricsURL(tc.endpoint)
		if got != tc.want || (err != nil) != (tc.want == "") {
			t.Errorf("metricsURL(%q, tls %v) = %q, %v; want %q", tc.endpoint, tc.tls, got, err, tc.want)
		}
	}
}
