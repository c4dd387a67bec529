// Package netfault injects network faults for Pacer's fault tests: a TCP
// proxy between a process and etcd that can cut the link or add latency.
// It is test infrastructure; no production code imports it.
package netfault

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Proxy is a TCP proxy on 127.0.0.1 that can stop forwarding, as in a
// network partition (connections stay open and bytes wait, as TCP would
// retransmit them, then flow again when the cut heals), and can delay every
// chunk of bytes, as a slow link would.
type Proxy struct {
	ln     net.Listener
	target string
	cut    atomic.Bool
	delay  atomic.Int64 // time.Duration
	mu     sync.Mutex
	heal   chan struct{} // closed and replaced on every heal
	conns  []net.Conn
	wg     sync.WaitGroup
	closed chan struct{}
}

// New starts a proxy to target and stops it when the test ends.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Proxy{ln: ln, target: target, heal: make(chan struct{}), closed: make(chan struct{})}
	b.wg.Go(b.accept)
	t.Cleanup(b.close)
	return b
}

// Addr is the address to dial instead of target.
func (b *Proxy) Addr() string { return b.ln.Addr().String() }

// SetCut cuts (true) or heals (false) the link.
func (b *Proxy) SetCut(cut bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.cut.Store(cut)
	if !cut {
		close(b.heal)
		b.heal = make(chan struct{})
	}
}

// wait blocks while the link is cut; false when the proxy is closing.
func (b *Proxy) wait() bool {
	for b.cut.Load() {
		b.mu.Lock()
		heal := b.heal
		b.mu.Unlock()
		if !b.cut.Load() {
			return true
		}
		select {
		case <-heal:
		case <-b.closed:
			return false
		}
	}
	return true
}

func (b *Proxy) accept() {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", b.target)
		if err != nil {
			c.Close()
			continue
		}
		b.mu.Lock()
		b.conns = append(b.conns, c, up)
		b.mu.Unlock()
		b.wg.Go(func() { b.pipe(up, c) })
		b.wg.Go(func() { b.pipe(c, up) })
	}
}

// SetDelay makes the proxy hold every chunk of bytes for d in each
// direction before passing it on (latency, not bandwidth: chunks do not
// wait for each other's delays).
func (b *Proxy) SetDelay(d time.Duration) { b.delay.Store(int64(d)) }

func (b *Proxy) pipe(dst, src net.Conn) {
	type chunk struct {
		data []byte
		at   time.Time
	}
	q := make(chan chunk, 1024)
	b.wg.Go(func() {
		defer dst.Close()
		for c := range q {
			if !b.wait() {
				return
			}
			if d := time.Until(c.at.Add(time.Duration(b.delay.Load()))); d > 0 {
				select {
				case <-time.After(d): // the injected latency
				case <-b.closed:
					return
				}
			}
			if _, err := dst.Write(c.data); err != nil {
				return
			}
		}
	})
	defer close(q)
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			select {
			case q <- chunk{data: append([]byte(nil), buf[:n]...), at: time.Now()}:
			case <-b.closed:
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (b *Proxy) close() {
	close(b.closed)
	b.ln.Close()
	b.mu.Lock()
	for _, c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}
