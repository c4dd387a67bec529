// Package netfault injects network faults for Pacer's fault tests: TCP
// proxies that can cut a link or add latency, between a process and etcd
// (Proxy) or between etcd members (Mesh). It is test infrastructure; no
// production code imports it.
package netfault

import (
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

	// With a Mesh, owner names the process that dialed a connection and
	// held says whether connections from it are cut.
	owner func(remote net.Addr) string
	held  func(from string) bool
}

// link is one proxied connection; from is who dialed it (see owner).
type link struct{ from string }

// New starts a proxy to target and stops it when the test ends.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	return newProxy(t, target, nil, nil)
}

func newProxy(t testing.TB, target string, owner func(net.Addr) string, held func(from string) bool) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &Proxy{ln: ln, target: target, owner: owner, held: held, heal: make(chan struct{}), closed: make(chan struct{})}
	b.wg.Go(b.accept)
	t.Cleanup(b.close)
	return b
}

// Addr is the address to dial instead of target.
func (b *Proxy) Addr() string { return b.ln.Addr().String() }

// SetCut cuts (true) or heals (false) the link.
func (b *Proxy) SetCut(cut bool) {
	b.cut.Store(cut)
	b.changed()
}

// changed wakes every connection waiting on a cut, to look again.
func (b *Proxy) changed() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.heal)
	b.heal = make(chan struct{})
}

func (b *Proxy) isCut(l *link) bool {
	if b.cut.Load() {
		return true
	}
	return b.held != nil && b.held(l.from)
}

// wait blocks while l is cut; false when the proxy is closing.
func (b *Proxy) wait(l *link) bool {
	for {
		b.mu.Lock()
		heal := b.heal
		b.mu.Unlock()
		if !b.isCut(l) {
			return true
		}
		select {
		case <-heal:
		case <-b.closed:
			return false
		}
	}
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
		l := &link{}
		if b.owner != nil {
			l.from = b.owner(c.RemoteAddr())
		}
		b.wg.Go(func() { b.pipe(up, c, l) })
		b.wg.Go(func() { b.pipe(c, up, l) })
	}
}

// SetDelay makes the proxy hold every chunk of bytes for d in each
// direction before passing it on (latency, not bandwidth: chunks do not
// wait for each other's delays).
func (b *Proxy) SetDelay(d time.Duration) { b.delay.Store(int64(d)) }

// pipe copies src to dst through a queue, so that held or delayed bytes do
// not stop reading.
func (b *Proxy) pipe(dst, src net.Conn, l *link) {
	type chunk struct {
		data []byte
		at   time.Time
	}
	q := make(chan chunk, 1024)
	b.wg.Go(func() {
		defer dst.Close()
		for c := range q {
			if !b.wait(l) {
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

// Mesh puts a proxy in front of every etcd member's peer listener and can
// isolate members from each other. Each member advertises its proxy's
// address (Add) as its peer URL, so every connection to a member's peer
// port passes that member's proxy. Members dial each other in both
// directions (a member reads a peer's raft messages over a stream it opened
// to the peer; a follower forwards lease renewals to the leader), so each
// proxy also needs to know who dialed: it finds the process that owns the
// connection's other end (Linux: /proc/net/tcp and /proc/<pid>/fd). That
// covers all peer traffic, raft or not, as a real partition would.
type Mesh struct {
	t testing.TB

	mu       sync.Mutex
	proxies  map[string]*Proxy     // by member name
	pids     map[string]func() int // the member's current process
	isolated map[string]bool
}

// NewMesh returns a mesh with no members yet; Add puts them in.
func NewMesh(t testing.TB) *Mesh {
	return &Mesh{t: t, proxies: map[string]*Proxy{}, pids: map[string]func() int{}, isolated: map[string]bool{}}
}

// Add starts the proxy for member name, whose peer listener is at peer and
// whose process is pid() (0 while it has none), and returns the address the
// member must advertise to its peers.
func (m *Mesh) Add(name, peer string, pid func() int) string {
	m.t.Helper()
	p := newProxy(m.t, peer, m.owner, func(from string) bool { return m.holds(name, from) })
	m.mu.Lock()
	m.proxies[name], m.pids[name] = p, pid
	m.mu.Unlock()
	return p.Addr()
}

// Isolate cuts (true) or heals (false) every link between member name and
// the others, in both directions. Held bytes wait, as TCP would retransmit
// them, and flow again on the heal.
func (m *Mesh) Isolate(name string, isolated bool) {
	m.mu.Lock()
	m.isolated[name] = isolated
	proxies := slices.Collect(maps.Values(m.proxies))
	m.mu.Unlock()
	for _, p := range proxies {
		p.changed()
	}
}

// holds reports whether the link from member from ("" if unknown) to
// member to is cut.
func (m *Mesh) holds(to, from string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.isolated[to] || m.isolated[from]
}

// owner names the member whose process holds the client end of a
// connection from remote, or "" if none does.
func (m *Mesh) owner(remote net.Addr) string {
	ta, ok := remote.(*net.TCPAddr)
	if !ok {
		return ""
	}
	inode := socketInode(ta)
	if inode == "" {
		return ""
	}
	m.mu.Lock()
	pids := maps.Clone(m.pids)
	m.mu.Unlock()
	want := "socket:[" + inode + "]"
	for name, pid := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", pid())
		fds, _ := os.ReadDir(dir)
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && l == want {
				return name
			}
		}
	}
	return ""
}

// socketInode finds the inode of the live IPv4 TCP socket bound to a, from
// /proc/net/tcp ("local_address" is hex: the address in host byte order on
// little-endian machines, then the port).
func socketInode(a *net.TCPAddr) string {
	ip := a.IP.To4()
	if ip == nil {
		return ""
	}
	local := fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], a.Port)
	data, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(data), "\n")[1:] {
		f := strings.Fields(line)
		// A socket in TIME_WAIT keeps its local address with inode 0: an
		// earlier connection from the same port, not this one.
		if len(f) > 9 && f[1] == local && f[9] != "0" {
			return f[9]
		}
	}
	return ""
}
