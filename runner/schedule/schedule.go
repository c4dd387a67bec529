// Package schedule computes when a job is due. It is pure: no I/O, no clocks of
// its own, no goroutines. Every replica that parses the same spec computes the
// same fire times, which is what lets the coordinator treat (job, fire time) as
// the identity of a slot.
//
// Supported specs:
//
//	"*/5 * * * * *"         6-field cron, seconds first
//	"30 2 * * *"            5-field cron (seconds = 0)
//	"@hourly", "@daily" …   cron descriptors
//	"@every 5s"             fixed interval, aligned to the Unix epoch
//	"at: 2026-12-01T09:00:00Z"  one-off at an RFC 3339 instant
//
// Cron specs are evaluated in the job's time zone.
package schedule

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
)

// Schedule yields a job's fire times.
type Schedule interface {
	// Next returns the first fire time strictly after t, or the zero time if
	// the schedule will never fire again.
	Next(t time.Time) time.Time
}

var cronParser = cron.NewParser(
	cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor,
)

// ErrEmpty is returned for an empty spec.
var ErrEmpty = errors.New("schedule is empty")

// Parse parses spec. loc is the time zone cron fields are read in; nil means UTC.
func Parse(spec string, loc *time.Location) (Schedule, error) {
	spec = strings.TrimSpace(spec)
	if loc == nil {
		loc = time.UTC
	}
	switch {
	case spec == "":
		return nil, ErrEmpty
	case strings.HasPrefix(spec, "@every"):
		arg := strings.TrimSpace(strings.TrimPrefix(spec, "@every"))
		d, err := time.ParseDuration(arg)
		if err != nil {
			return nil, fmt.Errorf("@every needs a duration such as \"@every 5s\": %w", err)
		}
		if d < time.Second || d%time.Second != 0 {
			return nil, fmt.Errorf("@every %s: interval must be a whole number of seconds, at least 1s", d)
		}
		return Every(d), nil
	case strings.HasPrefix(spec, "at:"):
		arg := strings.TrimSpace(strings.TrimPrefix(spec, "at:"))
		t, err := time.Parse(time.RFC3339, arg)
		if err != nil {
			return nil, fmt.Errorf("at: needs an RFC 3339 time such as \"at: 2026-12-01T09:00:00Z\": %w", err)
		}
		return At(t), nil
	case strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ="):
		return nil, errors.New("set the time zone with the job's timezone key, not a TZ= prefix")
	}
	s, err := cronParser.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("invalid cron expression %q: %w", spec, err)
	}
	cs, ok := s.(*cron.SpecSchedule)
	if !ok {
		return nil, fmt.Errorf("unsupported schedule %q", spec)
	}
	cs.Location = loc
	return cronSchedule{cs}, nil
}

type cronSchedule struct{ spec *cron.SpecSchedule }

func (c cronSchedule) Next(t time.Time) time.Time {
	n := c.spec.Next(t)
	if n.IsZero() {
		return n
	}
	return n.UTC()
}

// Every fires every d, at instants that are whole multiples of d since the Unix
// epoch, so every replica agrees on the slots without talking to the others.
type Every time.Duration

// Next implements Schedule.
func (e Every) Next(t time.Time) time.Time {
	d := time.Duration(e)
	return t.Truncate(d).Add(d).UTC()
}

// At fires once.
type At time.Time

// Next implements Schedule.
func (a At) Next(t time.Time) time.Time {
	at := time.Time(a)
	if t.Before(at) {
		return at.UTC()
	}
	return time.Time{}
}
