package stack

import (
	"testing"
	"unsafe"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// After Grow, a goroutine goes Reserve-minus-a-little deeper without its
// stack being copied: a copy moves its locals, so an address taken as a
// number before no longer matches. Without Grow the same goroutine's stack
// is copied (the control), so the test sees copies.
func TestGrowLeavesRoomForReserve(t *testing.T) {
	moved := func(grow bool) bool {
		done := make(chan bool)
		go func() {
			if grow {
				Grow()
			}
			var here byte
			at := uintptr(unsafe.Pointer(&here))
			frames(Reserve/(1<<10) - 2) // 1 KiB each, below this frame
			done <- uintptr(unsafe.Pointer(&here)) != at
		}()
		return <-done
	}
	if !moved(false) {
		t.Skip("a new goroutine's stack already held the frames: the runtime started it large (its guess from the stacks it scanned), so this run cannot tell")
	}
	if moved(true) {
		t.Error("the stack was copied after Grow")
	}
}

//go:noinline
func frames(n int) {
	var pad [1 << 10]byte
	if n > 0 {
		frames(n - 1)
	}
	keep(pad[:])
}
