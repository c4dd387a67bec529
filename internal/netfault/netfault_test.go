package netfault

import (
	"bufio"
	"net"
	"os"
	"testing"
	"time"
)

// echo serves one line back per line on a 127.0.0.1 listener.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				sc := bufio.NewScanner(c)
				for sc.Scan() {
					if _, err := c.Write(append(sc.Bytes(), '\n')); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// roundTrip sends a line over c and reports whether it came back within d.
func roundTrip(t *testing.T, c net.Conn, r *bufio.Reader, d time.Duration) bool {
	t.Helper()
	if _, err := c.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := r.ReadString('\n')
	_ = c.SetReadDeadline(time.Time{})
	return err == nil
}

// The mesh attributes a connection to the member whose process dialed it:
// here this test process plays member "a", so isolating "a" holds its
// connection to "b"'s proxy, and the bytes flow again after the heal.
func TestMeshIsolatesByDialingProcess(t *testing.T) {
	m := NewMesh(t)
	self := os.Getpid()
	m.Add("a", echo(t), func() int { return self })
	bAddr := m.Add("b", echo(t), func() int { return 0 })

	c, err := net.Dial("tcp", bAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if !roundTrip(t, c, r, 5*time.Second) {
		t.Fatal("no echo through the healthy mesh")
	}
	m.Isolate("a", true)
	if roundTrip(t, c, r, 300*time.Millisecond) {
		t.Fatal("a's connection to b still carries bytes while a is isolated")
	}
	m.Isolate("a", false)
	if _, err := r.ReadString('\n'); err != nil { // the held echo arrives
		t.Fatalf("held bytes did not flow after the heal: %v", err)
	}
	if !roundTrip(t, c, r, 5*time.Second) {
		t.Fatal("no echo after the heal")
	}
}

// A connection from a process that is no member passes unless its target
// is isolated.
func TestMeshUnknownSender(t *testing.T) {
	m := NewMesh(t)
	bAddr := m.Add("b", echo(t), func() int { return 0 })
	m.Add("c", echo(t), func() int { return 0 })
	c, err := net.Dial("tcp", bAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	m.Isolate("c", true)
	if !roundTrip(t, c, r, 5*time.Second) {
		t.Fatal("isolating c held a connection between two others")
	}
	m.Isolate("b", true)
	if roundTrip(t, c, r, 300*time.Millisecond) {
		t.Fatal("connection to isolated b still carries bytes")
	}
}
