package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// writePair writes a self-signed certificate and its key to dir.
func writePair(t *testing.T, dir, name string) (cert, key string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	cert, key = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	if err := os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestCheckFiles: a certificate or key that is missing, unreadable, not
// PEM or not the certificate's is a problem at its key's line (attack 3,
// B14: a missing cert_file passed validate and failed start-up with an fx
// error naming source files).
func TestCheckFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cert, key := writePair(t, dir, "api")
	other, otherKey := writePair(t, dir, "other")
	junk := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(junk, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "nonexistent.pem")
	check := func(tls ...string) error {
		t.Helper()
		cfg, err := Parse("pacer.yaml", y(append([]string{"http:", "  tls:"}, tls...)...))
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		return cfg.CheckFiles()
	}
	if err := check("    cert_file: "+cert, "    key_file: "+key, "    client_ca_file: "+other); err != nil {
		t.Fatalf("good files: %v", err)
	}
	for _, tc := range []struct {
		tls  []string
		want string
	}{
		{[]string{"    cert_file: " + missing, "    key_file: " + key},
			"pacer.yaml:3: http.tls.cert_file: open " + missing + ": no such file or directory"},
		{[]string{"    cert_file: " + cert, "    key_file: " + missing},
			"pacer.yaml:4: http.tls.key_file: open " + missing + ": no such file or directory"},
		{[]string{"    cert_file: " + cert, "    key_file: " + otherKey},
			"pacer.yaml:3: http.tls.cert_file: " + cert + " with key_file: tls: private key does not match public key"},
		{[]string{"    cert_file: " + junk, "    key_file: " + key},
			"pacer.yaml:3: http.tls.cert_file: " + junk + " with key_file: tls: failed to find any PEM data in certificate input"},
		{[]string{"    cert_file: " + cert, "    key_file: " + key, "    client_ca_file: " + junk},
			"pacer.yaml:5: http.tls.client_ca_file: " + junk + " holds no PEM certificate"},
	} {
		err := check(tc.tls...)
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s:\n got %v\nwant %s", strings.Join(tc.tls, " "), err, tc.want)
		}
	}
	cfg, err := Parse("pacer.yaml", y("cluster:", "  etcd:", "    endpoints: [https://etcd:2379]", "    tls:", "      ca_file: "+missing))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.CheckFiles(); err == nil || !strings.HasPrefix(err.Error(), "pacer.yaml:5: cluster.etcd.tls.ca_file: open ") {
		t.Errorf("etcd ca_file: %v", err)
	}
}

// TestJitterBound: a jitter not less than the schedule's interval, or over
// a day, is refused at its line (attack 3, B14: 1000000h on @every 2s was
// accepted, and the job never ran).
func TestJitterBound(t *testing.T) {
	t.Parallel()
	job := func(schedule, jitter string) error {
		_, err := Parse("pacer.yaml", y("jobs:", "  - id: j", "    plugin: shell", "    task: exec",
			"    schedule: '"+schedule+"'", "    jitter: "+jitter))
		return err
	}
	for _, tc := range []struct{ schedule, jitter, want string }{
		{"@every 2s", "1000000h", "pacer.yaml:6: jobs[0].jitter: 1000000h0m0s is more than the limit of 24h0m0s"},
		{"@every 2s", "2s", "pacer.yaml:6: jobs[0].jitter: 2s is not less than the schedule's shortest interval between slots (2s, from "},
		{"0 9,10 * * *", "90m", "pacer.yaml:6: jobs[0].jitter: 1h30m0s is not less than the schedule's shortest interval between slots (1h0m0s, from "},
	} {
		if err := job(tc.schedule, tc.jitter); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s jitter %s:\n got %v\nwant %s", tc.schedule, tc.jitter, err, tc.want)
		}
	}
	for _, ok := range [][2]string{{"@every 2s", "1999ms"}, {"@daily", "23h"}, {"@every 72h", "24h"}} {
		if err := job(ok[0], ok[1]); err != nil {
			t.Errorf("%s jitter %s: %v", ok[0], ok[1], err)
		}
	}
}

// TestJitterBoundAcrossClockChanges: the shortest interval counts the days
// the clocks change (attack G6: 23h30m on a daily 02:00 in Berlin was
// accepted, though its slots are 23 h apart after the spring change, and
// 11h45m on 00:00 and 12:00 in Lord Howe, whose clock moves 30 minutes).
// The error names the interval and when it is; the same schedules without
// a clock change, and a jitter below the short interval, are accepted.
func TestJitterBoundAcrossClockChanges(t *testing.T) {
	t.Parallel()
	job := func(schedule, zone, jitter string) error {
		_, err := Parse("pacer.yaml", y("jobs:", "  - id: j", "    plugin: shell", "    task: exec",
			"    schedule: '"+schedule+"'", "    timezone: "+zone, "    jitter: "+jitter))
		return err
	}
	re := regexp.MustCompile(`^pacer\.yaml:7: jobs\[0\]\.jitter: \S+ is not less than the schedule's shortest interval between slots ` +
		`\((\S+), from (\S+) to (\S+), when the clocks change at (\S+)\): `)
	for _, tc := range []struct {
		schedule, zone, jitter string
		short                  time.Duration
	}{
		{"0 0 2 * * *", "Europe/Berlin", "23h30m", 23 * time.Hour},
		{"0 0 0,12 * * *", "Australia/Lord_Howe", "11h45m", 11*time.Hour + 30*time.Minute},
	} {
		err := job(tc.schedule, tc.zone, tc.jitter)
		m := re.FindStringSubmatch(fmt.Sprint(err))
		if m == nil {
			t.Errorf("%s in %s, jitter %s: %v; want it refused at its line, naming the interval and when", tc.schedule, tc.zone, tc.jitter, err)
			continue
		}
		loc, _ := time.LoadLocation(tc.zone)
		from, err1 := time.Parse(time.RFC3339, m[2])
		to, err2 := time.Parse(time.RFC3339, m[3])
		change, err3 := time.Parse(time.RFC3339, m[4])
		if err1 != nil || err2 != nil || err3 != nil {
			t.Fatalf("times in %q: %v %v %v", m[0], err1, err2, err3)
		}
		_, before := change.Add(-time.Second).In(loc).Zone()
		_, after := change.In(loc).Zone()
		switch {
		case m[1] != tc.short.String() || to.Sub(from) != tc.short:
			t.Errorf("%s in %s: interval %s from %s to %s, want %s", tc.schedule, tc.zone, m[1], from, to, tc.short)
		case change.Before(from) || change.After(to) || before == after:
			t.Errorf("%s in %s: %s is no change of the clock between %s and %s", tc.schedule, tc.zone, change, from, to)
		case time.Until(from) < 0 || time.Until(from) > 2*365*24*time.Hour:
			t.Errorf("%s in %s: the interval starts %s, not in the next two years", tc.schedule, tc.zone, from)
		}
		if err := job(tc.schedule, "UTC", tc.jitter); err != nil {
			t.Errorf("%s in UTC, jitter %s: %v", tc.schedule, tc.jitter, err)
		}
		if below := (tc.short - time.Minute).String(); job(tc.schedule, tc.zone, below) != nil {
			t.Errorf("%s in %s, jitter %s: %v", tc.schedule, tc.zone, below, job(tc.schedule, tc.zone, below))
		}
	}
}
