package perfprofile

import (
	"strings"
	"testing"

	"go.uber.org/goleak"
)

// Three samples in perf script's format: one of etcd's server (counts
// whole, though it is in gRPC at the leaf), one of the runner allocating
// in its slog call (counts for logging), one in the kernel only.
const script = `pacer 1234 1000.000001:    2002002 cpu-clock:pppH: 
	          4a1b2c google.golang.org/grpc.(*Server).handleStream+0x12 (/bin/pacer)
	          4a1b00 go.etcd.io/etcd/server/v3/etcdserver.(*EtcdServer).Txn+0x34 (/bin/pacer)
	          400000 runtime.goexit.abi0+0x1 (/bin/pacer)

pacer 1234 1000.000002:    2002002 cpu-clock:pppH: 
	          4a1c00 runtime.mallocgc+0x99 (/bin/pacer)
	          4a1c10 log/slog.(*Logger).logAttrs+0x10 (/bin/pacer)
	          4a1c20 github.com/pacerun/pacer/runner.(*Runner).execute+0x55 (/bin/pacer)

pacer 1234 1000.000003:    2002002 cpu-clock:pppH: 
	ffffffff81000000 pvm_irq_enable+0x5 ([kernel.kallsyms])
`

func TestSplit(t *testing.T) {
	shares, total, err := Split(strings.NewReader(script))
	if err != nil {
		t.Fatal(err)
	}
	if total != 3 {
		t.Fatalf("%d samples, want 3", total)
	}
	got := map[string]Share{}
	for _, s := range shares {
		got[s.Component] = s
	}
	for _, want := range []string{"etcd server", "logging (slog, JSON lines)", Other} {
		if got[want].Samples != 1 {
			t.Errorf("%s: %+v, want 1 sample; all: %+v", want, got[want], shares)
		}
	}
	if got["logging (slog, JSON lines)"].InMalloc != 100 || got["etcd server"].InMalloc != 0 {
		t.Errorf("in malloc: %+v", shares)
	}
	if out := Format(shares, total, 300); !strings.Contains(out, "etcd server") || !strings.Contains(out, "100.0") {
		t.Errorf("Format:\n%s", out)
	}
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
