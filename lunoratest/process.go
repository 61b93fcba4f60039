package lunoratest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// DefaultReadyTimeout bounds the wait for a process's LUNORA_READY line.
	DefaultReadyTimeout = 60 * time.Second
	// exitTimeout bounds the wait for a process that was sent SIGKILL.
	exitTimeout = 30 * time.Second
	// maxLog bounds the output kept per process run.
	maxLog = 16 << 20
	// logTail is how much of each output a failing test logs.
	logTail = 64 << 10
	// ReadyPrefix starts the line a Lunora process prints once listening.
	ReadyPrefix = "LUNORA_READY"
	raceReport  = "WARNING: DATA RACE"
)

// Spec describes a process to start.
type Spec struct {
	// Name labels the process in logs; the binary's base name when empty.
	Name string
	// Path is the binary; Args its arguments.
	Path string
	Args []string
	// Dir is the working directory; a fresh temporary one when empty, so a
	// default such as ./lunora-data never lands in the source tree.
	Dir string
	// Env is added to the test binary's environment.
	Env []string
	// ReadyTimeout bounds the wait for the LUNORA_READY line;
	// DefaultReadyTimeout when zero.
	ReadyTimeout time.Duration
	// CheckRace fails the test if the process reports a data race.
	CheckRace bool
}

// NodeSpec is a Spec for lunora-node with args (a subcommand first, if
// any, then flags). Unless args set them, it adds "-data" with a fresh
// t.TempDir() and "-http-addr 127.0.0.1:0 -grpc-addr 127.0.0.1:0".
func NodeSpec(t testing.TB, b *Binaries, args ...string) Spec {
	t.Helper()
	args = append([]string(nil), args...)
	if _, ok := FlagValue(args, "data"); !ok {
		args = append(args, "-data", t.TempDir())
	}
	return Spec{Name: "lunora-node", Path: b.Node, Args: withLoopbackAddrs(args), CheckRace: b.Race}
}

// GatewaySpec is a Spec for lunora-gateway in front of the node at
// nodeAddr, with "-http-addr 127.0.0.1:0 -grpc-addr 127.0.0.1:0" unless
// args set them, and "-auth=off" (anonymous, which the gateway allows on
// loopback addresses only) unless args set -auth: tests of authentication
// pass -auth=on.
func GatewaySpec(t testing.TB, b *Binaries, schemaPath, nodeAddr string, args ...string) Spec {
	t.Helper()
	args = append([]string{"-schema", schemaPath, "-node", nodeAddr}, args...)
	if _, ok := FlagValue(args, "auth"); !ok {
		args = append(args, "-auth=off")
	}
	return Spec{Name: "lunora-gateway", Path: b.Gateway, Args: withLoopbackAddrs(args), CheckRace: b.Race}
}

func withLoopbackAddrs(args []string) []string {
	for _, f := range []string{"http-addr", "grpc-addr"} {
		if _, ok := FlagValue(args, f); !ok {
			args = append(args, "-"+f, "127.0.0.1:0")
		}
	}
	return args
}

// FlagValue returns the value of flag name in args, written -name v,
// --name v, -name=v or --name=v.
func FlagValue(args []string, name string) (string, bool) {
	i, eq := flagIndex(args, name)
	switch {
	case i < 0:
		return "", false
	case eq:
		return args[i][strings.IndexByte(args[i], '=')+1:], true
	case i+1 < len(args):
		return args[i+1], true
	}
	return "", false
}

// flagIndex finds flag name in args; eq reports the -name=v form.
func flagIndex(args []string, name string) (i int, eq bool) {
	for i, a := range args {
		if a == "--" {
			break
		}
		a = strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		if a == name {
			return i, false
		}
		if strings.HasPrefix(a, name+"=") {
			return i, true
		}
	}
	return -1, false
}

func setFlag(args []string, name, value string) {
	i, eq := flagIndex(args, name)
	switch {
	case i < 0:
	case eq:
		args[i] = args[i][:strings.IndexByte(args[i], '=')+1] + value
	case i+1 < len(args):
		args[i+1] = value
	}
}

// Ready is a parsed LUNORA_READY line, e.g.
// "LUNORA_READY node=n1 http=127.0.0.1:41234 grpc=127.0.0.1:41235".
type Ready struct {
	Line   string
	Words  []string          // fields without '=', e.g. "gateway"
	Fields map[string]string // key=value fields
}

// HTTP and GRPC are the addresses the process listens on.
func (r Ready) HTTP() string { return r.Fields["http"] }
func (r Ready) GRPC() string { return r.Fields["grpc"] }

// ParseReady parses a LUNORA_READY line.
func ParseReady(line string) (Ready, bool) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != ReadyPrefix {
		return Ready{}, false
	}
	r := Ready{Line: strings.TrimSpace(line), Fields: map[string]string{}}
	for _, w := range f[1:] {
		if k, v, ok := strings.Cut(w, "="); ok {
			r.Fields[k] = v
		} else {
			r.Words = append(r.Words, w)
		}
	}
	return r, true
}

// Process is a started Lunora process, restartable. Its methods are safe
// for concurrent use; those that take no testing.TB fail the test that
// started it.
type Process struct {
	t    testing.TB
	spec Spec

	mu   sync.Mutex
	args []string // spec.Args, with port-0 addresses pinned once bound
	runs []*run   // every start; the last is current
}

// run is one lifetime of the process.
type run struct {
	n              int
	cmd            *exec.Cmd
	stdout, stderr logBuffer
	ready          chan Ready
	done           chan struct{} // closed once the process has exited
	state          *os.ProcessState
	waitErr        error
	readyLine      Ready
}

// Start starts spec's process and waits for its LUNORA_READY line. If the
// process exits first or the line does not come within the ready timeout,
// t fails with the process's output. The process is killed when the test
// ends; if the test failed, the output of each of its runs is logged.
func Start(t testing.TB, spec Spec) *Process {
	t.Helper()
	if spec.Name == "" {
		spec.Name = filepath.Base(spec.Path)
	}
	if spec.Dir == "" {
		spec.Dir = t.TempDir()
	}
	if spec.ReadyTimeout <= 0 {
		spec.ReadyTimeout = DefaultReadyTimeout
	}
	p := &Process{t: t, spec: spec, args: append([]string(nil), spec.Args...)}
	t.Cleanup(p.cleanup)
	p.launch()
	return p
}

// SetEnv replaces the environment added to the process's next runs (for a
// Restart without a crash-test fault, say).
func (p *Process) SetEnv(env ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.spec.Env = env
}

// AppendArgs adds arguments to the process's next runs.
func (p *Process) AppendArgs(args ...string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.args = append(p.args, args...)
}

// Restart starts the process again with the same arguments — so the same
// data directory — and, where it was given port 0, the addresses its first
// run bound, so that clients and a gateway can reconnect. The process must
// have exited (Kill, Terminate or Wait first).
func (p *Process) Restart() {
	p.t.Helper()
	if r := p.current(); !r.exited() {
		p.t.Fatalf("%s: Restart while pid %d is still running", p.spec.Name, r.cmd.Process.Pid)
	}
	p.launch()
}

func (p *Process) launch() {
	t := p.t
	t.Helper()
	p.mu.Lock()
	r := &run{n: len(p.runs) + 1, ready: make(chan Ready, 1), done: make(chan struct{})}
	args := append([]string(nil), p.args...)
	p.runs = append(p.runs, r)
	p.mu.Unlock()

	cmd := exec.Command(p.spec.Path, args...)
	cmd.Dir = p.spec.Dir
	p.mu.Lock()
	env := append(os.Environ(), p.spec.Env...)
	p.mu.Unlock()
	cmd.Env = env
	cmd.Stderr = &r.stderr
	r.cmd = cmd
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		close(r.done)
		t.Fatalf("%s: %v", p.spec.Name, err)
	}
	start := time.Now()
	if err := startCommand(cmd); err != nil {
		close(r.done)
		t.Fatalf("%s: start %s: %v", p.spec.Name, p.spec.Path, err)
	}
	go r.readStdout(stdout)

	timer := time.NewTimer(p.spec.ReadyTimeout)
	defer timer.Stop()
	select {
	case ready := <-r.ready:
		p.mu.Lock()
		r.readyLine = ready
		p.pinAddrs(ready)
		p.mu.Unlock()
	case <-r.done:
		t.Fatalf("%s[%d]: exited (%v) before printing %s; args %q\nstderr:\n%s", p.spec.Name, r.n, r.exitErr(), ReadyPrefix, args, r.stderr.tail(logTail))
	case <-timer.C:
		r.kill()
		t.Fatalf("%s[%d]: no %s line within %s; args %q\nstderr:\n%s", p.spec.Name, r.n, ReadyPrefix, time.Since(start).Round(time.Millisecond), args, r.stderr.tail(logTail))
	}
}

// pinAddrs replaces port-0 listen addresses in p.args by the bound ones.
// Called with p.mu held.
func (p *Process) pinAddrs(r Ready) {
	for flag, bound := range map[string]string{"http-addr": r.HTTP(), "grpc-addr": r.GRPC()} {
		if v, ok := FlagValue(p.args, flag); ok && strings.HasSuffix(v, ":0") && bound != "" {
			setFlag(p.args, flag, bound)
		}
	}
}

// readStdout keeps the output, hands the first LUNORA_READY line to
// launch and, at EOF, reaps the process.
func (r *run) readStdout(stdout io.Reader) {
	br := bufio.NewReader(stdout)
	sent := false
	for {
		line, err := br.ReadString('\n')
		r.stdout.Write([]byte(line))
		if !sent {
			if ready, ok := ParseReady(line); ok {
				r.ready <- ready
				sent = true
			}
		}
		if err != nil {
			break
		}
	}
	io.Copy(io.Discard, stdout)
	r.waitErr = r.cmd.Wait()
	r.state = r.cmd.ProcessState
	close(r.done)
}

func (r *run) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

func (r *run) exitErr() error {
	if r.waitErr != nil {
		return r.waitErr
	}
	return errors.New("exit status 0")
}

// kill sends SIGKILL and waits for the exit; it reports whether the
// process is gone.
func (r *run) kill() bool {
	if r.exited() {
		return true
	}
	if r.cmd.Process == nil {
		return true // never started
	}
	_ = r.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-r.done:
		return true
	case <-time.After(exitTimeout):
		return false
	}
}

func (p *Process) current() *run {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runs[len(p.runs)-1]
}

// Ready is the current run's LUNORA_READY line.
func (p *Process) Ready() Ready {
	r := p.current()
	p.mu.Lock()
	defer p.mu.Unlock()
	return r.readyLine
}

// HTTPAddr and GRPCAddr are the addresses the current run listens on.
func (p *Process) HTTPAddr() string { return p.Ready().HTTP() }
func (p *Process) GRPCAddr() string { return p.Ready().GRPC() }

// DataDir is the value of the -data flag, or "".
func (p *Process) DataDir() string {
	v, _ := FlagValue(p.spec.Args, "data")
	return v
}

// PID is the current run's process ID.
func (p *Process) PID() int { return p.current().cmd.Process.Pid }

// Done is closed when the current run has exited.
func (p *Process) Done() <-chan struct{} { return p.current().done }

// Stdout and Stderr are the current run's output so far.
func (p *Process) Stdout() string { return p.current().stdout.String() }
func (p *Process) Stderr() string { return p.current().stderr.String() }

// Signal sends sig to the current run; it fails the test if the process
// has already exited.
func (p *Process) Signal(sig os.Signal) {
	p.t.Helper()
	r := p.current()
	if r.exited() {
		p.t.Fatalf("%s[%d]: signal %v: the process has already exited (%v)", p.spec.Name, r.n, sig, r.exitErr())
	}
	if err := r.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("%s[%d]: signal %v: %v", p.spec.Name, r.n, sig, err)
	}
}

// Kill sends SIGKILL to the current run and returns once it has exited.
func (p *Process) Kill() {
	p.t.Helper()
	r := p.current()
	if r.exited() {
		p.t.Fatalf("%s[%d]: Kill: the process has already exited (%v)", p.spec.Name, r.n, r.exitErr())
	}
	if !r.kill() {
		p.t.Fatalf("%s[%d]: still running %s after SIGKILL", p.spec.Name, r.n, exitTimeout)
	}
}

// Wait waits up to timeout for the current run to exit and returns its
// state, or nil and false on timeout.
func (p *Process) Wait(timeout time.Duration) (*os.ProcessState, bool) {
	r := p.current()
	select {
	case <-r.done:
		return r.state, true
	case <-time.After(timeout):
		return nil, false
	}
}

// Terminate sends SIGTERM and waits up to timeout for the exit. If the
// process outlives timeout it is killed and the test fails.
func (p *Process) Terminate(timeout time.Duration) *os.ProcessState {
	p.t.Helper()
	p.Signal(syscall.SIGTERM)
	start := time.Now()
	if st, ok := p.Wait(timeout); ok {
		return st
	}
	r := p.current()
	r.kill()
	p.t.Fatalf("%s[%d]: still running %s after SIGTERM; killed", p.spec.Name, r.n, time.Since(start).Round(time.Millisecond))
	return nil
}

// cleanup kills a running process, fails the test on race reports and, if
// the test failed, logs every run's output.
func (p *Process) cleanup() {
	p.mu.Lock()
	runs := append([]*run(nil), p.runs...)
	p.mu.Unlock()
	for _, r := range runs {
		if !r.kill() {
			p.t.Errorf("%s[%d]: pid %d still running %s after SIGKILL", p.spec.Name, r.n, r.cmd.Process.Pid, exitTimeout)
		}
	}
	for _, r := range runs {
		if p.spec.CheckRace && strings.Contains(r.stderr.String(), raceReport) {
			p.t.Errorf("%s[%d]: the process reported a data race (stderr below)", p.spec.Name, r.n)
		}
	}
	if !p.t.Failed() {
		return
	}
	for _, r := range runs {
		p.t.Logf("%s[%d] %q: %v\n--- stdout:\n%s\n--- stderr:\n%s", p.spec.Name, r.n, r.cmd.Args, r.exitErr(), r.stdout.tail(logTail), r.stderr.tail(logTail))
	}
}

// Result is what Run reports about a process that ran to its end.
type Result struct {
	ExitCode       int
	Stdout, Stderr string
}

// Run runs spec's process to its end, bounded by timeout (the process is
// killed and t fails past it). Use it for a process expected to exit on
// its own, such as one refusing its configuration. The output is logged if
// the test fails.
func Run(t testing.TB, spec Spec, timeout time.Duration) Result {
	t.Helper()
	if spec.Name == "" {
		spec.Name = filepath.Base(spec.Path)
	}
	if spec.Dir == "" {
		spec.Dir = t.TempDir()
	}
	var stdout, stderr logBuffer
	cmd := exec.Command(spec.Path, spec.Args...)
	cmd.Dir = spec.Dir
	cmd.Env = append(os.Environ(), spec.Env...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := startCommand(cmd); err != nil {
		t.Fatalf("%s: start %s: %v", spec.Name, spec.Path, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s %q:\n--- stdout:\n%s\n--- stderr:\n%s", spec.Name, cmd.Args, stdout.tail(logTail), stderr.tail(logTail))
		}
	})
	select {
	case <-done:
	case <-time.After(timeout):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-done
		t.Fatalf("%s: still running after %s; killed", spec.Name, timeout)
	}
	if spec.CheckRace && strings.Contains(stderr.String(), raceReport) {
		t.Errorf("%s: the process reported a data race", spec.Name)
	}
	return Result{ExitCode: cmd.ProcessState.ExitCode(), Stdout: stdout.String(), Stderr: stderr.String()}
}

// logBuffer keeps up to maxLog bytes of a process's output.
type logBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	dropped int64
}

func (b *logBuffer) Write(p []byte) (int, error) {
	n := len(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := max(maxLog-b.buf.Len(), 0); room < len(p) {
		b.dropped += int64(len(p) - room)
		p = p[:room]
	}
	b.buf.Write(p)
	return n, nil
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// tail is the last n bytes, saying how much came before.
func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	note := ""
	if len(s) > n {
		note = fmt.Sprintf("[... %d bytes before ...]\n", len(s)-n)
		s = s[len(s)-n:]
	}
	if b.dropped > 0 {
		s += fmt.Sprintf("\n[... %d bytes dropped past the %d byte bound ...]", b.dropped, maxLog)
	}
	return note + s
}
