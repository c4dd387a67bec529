package sdk_test

import (
	"testing"

	"go.uber.org/goleak"
)

// The examples start plugins in this process: none may leave a goroutine.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
