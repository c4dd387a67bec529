package runner

import "time"

// wallNow is the runner's wall clock: which slots are due, claim and record
// times. Durations and lease deadlines use the monotonic clock (time.Now /
// time.Since) and never go through it. A clock that jumps or is skewed
// therefore changes when a runner thinks a slot is due, never whether it
// may run one: that is decided by its lease (monotonic) and its fencing
// token (an etcd revision), and a slot's claim is keyed by the slot itself.
//
// Its readings carry time.Now's monotonic reading, which Time.Sub prefers
// over the wall clock: code that must see the wall clock move (the
// scheduler's step detection) compares UnixNano. A build with the tag
// faultclock shifts it, to test clock jumps and skew (clock_faultclock.go);
// that is the only reason it is a variable.
var wallNow = time.Now
