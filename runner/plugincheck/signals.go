package plugincheck

import (
	"bufio"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pacerun/pacer/sdk/pluginv1"
)

// checkSIGTERM starts the plugin and sends it SIGTERM, which is what Linux
// delivers when its runner dies (the runner sets the parent-death signal):
// it must exit within the grace period.
func (c *checker) checkSIGTERM() {
	s, err := c.start()
	defer s.kill()
	if err != nil {
		c.skip(CheckSIGTERM, "", "the plugin does not start: %v", err)
		return
	}
	t0 := time.Now()
	if err := syscall.Kill(s.proc.pid(), syscall.SIGTERM); err != nil {
		c.fail(CheckSIGTERM, "", "cannot signal pid %d: %v", s.proc.pid(), err)
		return
	}
	if !s.proc.waitExit(c.opts.Grace) {
		c.fail(CheckSIGTERM, "", "want an exit within %s of SIGTERM (what Linux sends when the runner dies); still running", c.opts.Grace)
		return
	}
	c.pass(CheckSIGTERM, "", "exited %s after SIGTERM (%s)", time.Since(t0).Round(time.Millisecond), describeExit(s.proc.waitErr))
}

// checkParentDeath starts the plugin under a stand-in runner (a shell),
// without the parent-death signal, waits for its handshake, kills the shell
// with SIGKILL and expects the orphaned plugin to notice and exit.
func (c *checker) checkParentDeath() {
	cert, err := selfSigned()
	if err != nil {
		c.fail(CheckParentDeath, "", "cannot make a certificate: %v", err)
		return
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
	pidR, pidW, err := os.Pipe()
	if err != nil {
		c.fail(CheckParentDeath, "", "%v", err)
		return
	}
	defer pidR.Close()
	// The shell starts the plugin in the background, reports its pid on
	// file descriptor 3 and waits: it is the plugin's parent.
	sh := exec.Command("/bin/sh", "-c", `"$0" 3>&- & echo "$!" >&3; exec 3>&-; wait`, c.path)
	sh.Env = append(c.env(),
		pluginv1.Handshake.MagicCookieKey+"="+pluginv1.Handshake.MagicCookieValue,
		fmt.Sprintf("PLUGIN_PROTOCOL_VERSIONS=%d", pluginv1.ProtocolVersion),
		"PLUGIN_MIN_PORT=0", "PLUGIN_MAX_PORT=0",
		"PLUGIN_CLIENT_CERT="+string(certPEM))
	sh.ExtraFiles = []*os.File{pidW}
	sh.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, err := sh.StdoutPipe()
	if err != nil {
		pidW.Close()
		c.fail(CheckParentDeath, "", "%v", err)
		return
	}
	if err := sh.Start(); err != nil {
		pidW.Close()
		c.fail(CheckParentDeath, "", "cannot start /bin/sh as a stand-in runner: %v", err)
		return
	}
	pidW.Close()
	shDone := make(chan struct{})
	defer func() {
		_ = sh.Process.Kill()
		<-shDone
	}()
	pidLine, _ := bufio.NewReader(pidR).ReadString('\n')
	pid, err := strconv.Atoi(strings.TrimSpace(pidLine))
	if err != nil {
		go func() { _ = sh.Wait(); close(shDone) }()
		c.fail(CheckParentDeath, "", "the stand-in runner did not report the plugin's pid: %q", pidLine)
		return
	}
	defer func() {
		killGroup(pid)            // the plugin and what it started
		killGroup(sh.Process.Pid) // the stand-in's group, which the plugin is in
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}()
	lines := make(chan string, 1)
	go func() {
		br := bufio.NewReader(out)
		line, _ := br.ReadString('\n')
		lines <- line
		_, _ = io.Copy(io.Discard, br)
	}()
	go func() { _ = sh.Wait(); close(shDone) }()
	select {
	case line := <-lines:
		if !looksLikeHandshake(line) {
			c.skip(CheckParentDeath, "", "the plugin gave no handshake under the stand-in runner: %q", firstLine(line))
			return
		}
	case <-time.After(c.opts.StartTimeout):
		c.skip(CheckParentDeath, "", "the plugin gave no handshake within %s under the stand-in runner", c.opts.StartTimeout)
		return
	case <-c.ctx.Done():
		return // skipped as interrupted
	}
	t0 := time.Now()
	_ = sh.Process.Kill()
	<-shDone
	for alive(pid) {
		if c.ctx.Err() != nil {
			return
		}
		if time.Since(t0) > c.opts.Grace {
			c.fail(CheckParentDeath, "", "want an exit within %s of its parent's death (SIGKILL, no parent-death signal); still running: watch the parent process (getppid)", c.opts.Grace)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.pass(CheckParentDeath, "", "exited %s after its parent was killed (SIGKILL, no parent-death signal)", time.Since(t0).Round(time.Millisecond))
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
