package coord

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// quotaMetric is the gauge in which etcd (3.4 and later) exports its space
// quota on its client URL's /metrics.
const quotaMetric = "etcd_server_quota_backend_bytes"

// quotaRefresh is how long a quota read from a member's /metrics is kept
// before it is read again: it changes only when the member restarts with
// another --quota-backend-bytes.
const quotaRefresh = 10 * time.Minute

// maxMetricsBytes bounds the /metrics page read (etcd's is about 200 KB).
const maxMetricsBytes = 16 << 20

// quotaReader finds the space quota of the etcd member a replica talks to.
// etcd 3.6 reports it in its Status response (dbSizeQuota); 3.4 and 3.5 do
// not, but export it on their client URL's /metrics, which the reader then
// reads, over the etcd client's TLS settings, and keeps per member for
// quotaRefresh. When that fails too the quota is unknown: Pacer does not
// guess etcd's default, since a member started with another
// --quota-backend-bytes would make a guess wrong either way (no warning
// before NOSPACE, or a false one). Used by the monitor's goroutine only.
type quotaReader struct {
	tls     *tls.Config
	client  *http.Client
	timeout time.Duration
	// read holds, per member ID, the quota read from its /metrics.
	read map[uint64]quotaRead
}

type quotaRead struct {
	quota int64
	at    time.Time
}

func newQuotaReader(tc *tls.Config, timeout time.Duration) *quotaReader {
	return &quotaReader{
		tls: tc,
		// No keep-alive: a page read every quotaRefresh leaves no
		// connection (and goroutines) behind.
		client:  &http.Client{Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}},
		timeout: timeout,
		read:    map[uint64]quotaRead{},
	}
}

// quota returns the space quota of member (reached at endpoint), which
// reported the quota reported in its Status (0: not reported): that one if
// set, else the one read from its /metrics less than quotaRefresh ago, else
// one read now. An error says why the quota is unknown.
func (q *quotaReader) quota(ctx context.Context, member uint64, endpoint string, reported int64, now time.Time) (int64, error) {
	if reported > 0 {
		return reported, nil
	}
	if r, ok := q.read[member]; ok && now.Sub(r.at) < quotaRefresh {
		return r.quota, nil
	}
	quota, err := q.fetch(ctx, endpoint)
	if err != nil {
		delete(q.read, member)
		return 0, err
	}
	q.read[member] = quotaRead{quota: quota, at: now}
	return quota, nil
}

// fetch reads etcd_server_quota_backend_bytes from endpoint's /metrics.
func (q *quotaReader) fetch(ctx context.Context, endpoint string) (int64, error) {
	u, err := q.metricsURL(endpoint)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, q.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := q.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(io.LimitReader(resp.Body, maxMetricsBytes))
	if err != nil {
		return 0, fmt.Errorf("GET %s: %w", u, err)
	}
	mf, ok := families[quotaMetric]
	if !ok || len(mf.GetMetric()) == 0 || mf.GetMetric()[0].GetGauge() == nil {
		return 0, fmt.Errorf("GET %s: no gauge %s", u, quotaMetric)
	}
	v := mf.GetMetric()[0].GetGauge().GetValue()
	if v <= 0 {
		return 0, fmt.Errorf("GET %s: %s is %g: the member has no space quota", u, quotaMetric, v)
	}
	return int64(v), nil
}

// metricsURL is the /metrics URL of an etcd client endpoint: a URL
// (http, https) or host:port, which the etcd client reaches over TLS when
// it has TLS settings.
func (q *quotaReader) metricsURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	switch {
	case err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "":
		return u.Scheme + "://" + u.Host + "/metrics", nil
	case err == nil && u.Scheme != "" && u.Opaque == "": // unix://, unixs://
		return "", errors.New("endpoint " + endpoint + " is no HTTP URL to read /metrics from")
	}
	scheme := "http" // host:port
	if q.tls != nil {
		scheme = "https"
	}
	return scheme + "://" + endpoint + "/metrics", nil
}

// QuotaUnknown is the start of EtcdStatus.QuotaError.
const QuotaUnknown = "quota unknown (etcd < 3.6 does not report it, and its /metrics could not be read: "
