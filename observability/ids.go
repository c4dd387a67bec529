package observability

import "github.com/google/uuid"

// NewCorrelationID returns a fresh correlation ID: one per run, shared by
// every attempt, log line, span and record of it.
func NewCorrelationID() string { return uuid.NewString() }

// NewRunID returns a fresh, time-ordered ID for one attempt.
func NewRunID() string { return uuid.Must(uuid.NewV7()).String() }
