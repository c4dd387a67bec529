package schedule

import (
	"archive/zip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Zone data from two sources, loaded explicitly rather than through
// time.LoadLocation (which takes the first source it finds):
//
//   - the system's: the TZif files under /usr/share/zoneinfo (Debian's
//     tzdata lists transitions up to 2037, then a TZ rule);
//   - Go's embedded: what time/tzdata compiles into a binary, and what an
//     image without /usr/share/zoneinfo uses. time/tzdata's zzipdata.go is
//     generated from $GOROOT/lib/time/zoneinfo.zip, byte for byte
//     (TestEmbeddedZoneDataIsGOROOTZip), whose files list transitions only
//     up to the present and then a TZ rule.
//
// Go computes a zone's bounds from the TZ rule beyond the last listed
// transition, which is where golang/go#81583 lives.

const systemZoneDir = "/usr/share/zoneinfo"

func systemLoc(tb testing.TB, name string) *time.Location {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(systemZoneDir, name))
	if os.IsNotExist(err) {
		tb.Skipf("no system zone data for %s under %s (install tzdata to run this test): %v", name, systemZoneDir, err)
	}
	if err != nil {
		tb.Fatal(err)
	}
	loc, err := time.LoadLocationFromTZData(name, b)
	if err != nil {
		tb.Fatal(err)
	}
	return loc
}

var embeddedZones struct {
	once sync.Once
	err  error
	data map[string][]byte
}

// goRoot is the GOROOT of the go command that runs the tests (go test puts
// its own bin directory first on PATH).
var goRoot = sync.OnceValues(func() (string, error) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOROOT: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
})

// goZoneZip is Go's own zone data, $GOROOT/lib/time/zoneinfo.zip.
func goZoneZip(tb testing.TB) string {
	tb.Helper()
	root, err := goRoot()
	if err != nil {
		tb.Fatal(err)
	}
	return filepath.Join(root, "lib", "time", "zoneinfo.zip")
}

func embeddedLoc(tb testing.TB, name string) *time.Location {
	tb.Helper()
	path := goZoneZip(tb)
	embeddedZones.once.Do(func() {
		z, err := zip.OpenReader(path)
		if err != nil {
			embeddedZones.err = err
			return
		}
		defer z.Close()
		embeddedZones.data = map[string][]byte{}
		for _, f := range z.File {
			r, err := f.Open()
			if err != nil {
				embeddedZones.err = err
				return
			}
			b, err := io.ReadAll(r)
			r.Close()
			if err != nil {
				embeddedZones.err = err
				return
			}
			embeddedZones.data[f.Name] = b
		}
	})
	if embeddedZones.err != nil {
		tb.Fatalf("Go's zone data %s: %v", path, embeddedZones.err)
	}
	b, ok := embeddedZones.data[name]
	if !ok {
		tb.Fatalf("no zone %s in %s", name, path)
	}
	loc, err := time.LoadLocationFromTZData(name, b)
	if err != nil {
		tb.Fatal(err)
	}
	return loc
}

// The file embeddedLoc reads is what time/tzdata embeds.
func TestEmbeddedZoneDataIsGOROOTZip(t *testing.T) {
	t.Parallel()
	root, err := goRoot()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(root, "src", "time", "tzdata", "zzipdata.go"))
	if err != nil {
		t.Skipf("Go's source of time/tzdata is not installed, cannot compare: %v", err)
	}
	const decl = "const zipdata = "
	i := strings.Index(string(src), decl)
	if i < 0 {
		t.Fatal("zzipdata.go has no zipdata constant")
	}
	embedded, err := strconv.Unquote(strings.TrimSpace(string(src[i+len(decl):])))
	if err != nil {
		t.Fatal(err)
	}
	path := goZoneZip(t)
	zip, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if embedded != string(zip) {
		t.Fatalf("time/tzdata embeds %d bytes that differ from %s (%d bytes)", len(embedded), path, len(zip))
	}
}

// The case from the issue: with Go's embedded zone data, "0 * * * *" in
// Berlin from 2028-12-30T22:00Z gave one fire time and then "never".
func TestHourlyAcrossLeapYearEnd(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		source string
		loc    func(testing.TB, string) *time.Location
		year   int
	}{
		{"embedded", embeddedLoc, 2028},
		{"embedded", embeddedLoc, 2024},
		{"system", systemLoc, 2040}, // past the system files' last listed transition
	} {
		t.Run(tc.source+"/"+strconv.Itoa(tc.year), func(t *testing.T) {
			t.Parallel()
			berlin := tc.loc(t, "Europe/Berlin")
			for _, spec := range []string{"0 * * * *", "@hourly", "*/5 * * * *"} {
				from := time.Date(tc.year, 12, 30, 22, 0, 0, 0, time.UTC)
				s := mustParse(t, spec, berlin)
				step := time.Hour
				if spec == "*/5 * * * *" {
					step = 5 * time.Minute
				}
				fires := NextN(s, from, 60)
				if len(fires) != 60 {
					t.Fatalf("%q from %v: %d fire times, then never: %v", spec, from, len(fires), fires)
				}
				for i, f := range fires {
					if want := from.Add(time.Duration(i+1) * step); !f.Equal(want) {
						t.Fatalf("%q from %v: fire %d at %v, want %v", spec, from, i, f, want)
					}
				}
			}
		})
	}
}

// leapZones are zones with daylight saving in the years tested, northern
// and southern, with offsets off the hour (St John's, Chatham, Lord Howe's
// half-hour shift) and one whose "summer" time is behind its standard time
// (Dublin).
var leapZones = []string{
	"Europe/Berlin", "Europe/London", "Europe/Dublin", "America/New_York", "America/Los_Angeles",
	"America/Havana", "America/St_Johns", "America/Santiago", "Australia/Sydney", "Australia/Lord_Howe",
	"Pacific/Auckland", "Pacific/Chatham", "Asia/Jerusalem",
}

// TestPropertyLeapYearEnds checks hourly and sub-hourly specs (and a daily
// one) across the end of every leap year from 2024 to 2104 (and of
// 2100, which is not one), in every zone of leapZones, with the system's
// zone data and with Go's embedded data: Next from every 19th minute of
// 30 December 20:00 UTC to 1 January 04:00 UTC (around the day Go gets
// wrong, 31 December UTC), and 13 seconds into each, is the first fire time
// after it by the brute-force oracle, which reads each minute's wall clock
// with package time. (19 and 60 are coprime: the starts fall on every
// minute of the hour.)
func TestPropertyLeapYearEnds(t *testing.T) {
	t.Parallel()
	specs := []string{"0 * * * *", "@hourly", "*/5 * * * *", "30 * * * *", "30 2 * * *"}
	var years []int
	for y := 2024; y <= 2104; y += 4 {
		years = append(years, y)
	}
	years = append(years, 2100)
	for _, src := range []struct {
		name string
		loc  func(testing.TB, string) *time.Location
	}{{"system", systemLoc}, {"embedded", embeddedLoc}} {
		for _, zone := range leapZones {
			t.Run(src.name+"/"+zone, func(t *testing.T) {
				t.Parallel()
				loc := src.loc(t, zone)
				if _, jan := time.Date(2030, 1, 15, 12, 0, 0, 0, loc).Zone(); true {
					if _, jul := time.Date(2030, 7, 15, 12, 0, 0, 0, loc).Zone(); jan == jul {
						t.Fatalf("%s has no daylight saving in 2030 in this zone data: pick another zone", zone)
					}
				}
				for _, spec := range specs {
					o, s := oracleOf(t, spec), mustParse(t, spec, loc)
					for _, y := range years {
						lo := time.Date(y, 12, 30, 20, 0, 0, 0, time.UTC).Unix()
						hi := time.Date(y+1, 1, 1, 4, 0, 0, 0, time.UTC).Unix()
						ahead := int64(2 * 3600)
						if !o.byInstant {
							ahead = 26 * 3600 // daily: the next fire may be a day away
						}
						var fires []int64 // by the oracle, minute by minute (the specs fire on whole minutes)
						for m := lo; m <= hi+ahead; m += 60 {
							if oracleFires(o, loc, m) {
								fires = append(fires, m)
							}
						}
						k := 0
						for start := lo; start < hi; start += 19 * 60 {
							for _, at := range []int64{start, start + 13} {
								for fires[k] <= at {
									k++
								}
								if got := s.Next(time.Unix(at, 0)); got.Unix() != fires[k] {
									t.Fatalf("%q in %s, %d: Next(%v) = %v, oracle %v", spec, zone, y,
										time.Unix(at, 0).UTC(), got, time.Unix(fires[k], 0).UTC())
								}
							}
						}
					}
				}
			})
		}
	}
}
