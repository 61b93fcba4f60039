//go:build linux

package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lunora/lunora/lunoratest"
	"github.com/lunora/lunora/shardhost"
)

// Debian's chromium and chromium-driver packages (scripts/test installs
// them).
const (
	chromedriverPath = "/usr/bin/chromedriver"
	chromiumPath     = "/usr/bin/chromium"
)

// TestChatBrowser opens the dev-mode chat page (/chat/) in two headless
// Chromium windows on one room, sends a message by typing it into page A and
// clicking Send, and waits for it to appear in both pages through their
// WebSocket subscriptions; then the other way round; then while page B's
// socket is down, which B must catch up on by resuming with since_seq; then
// an admin's edit and delete, on pages holding the rows from deltas (A) and
// from a snapshot (B, reloaded). Chromium is driven by chromedriver over
// the W3C WebDriver HTTP API, with the small client below.
func TestChatBrowser(t *testing.T) {
	for _, p := range []string{chromedriverPath, chromiumPath} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s is not installed (apt-get install chromium chromium-driver; scripts/test does): %v", p, err)
		}
	}
	start := time.Now()
	dev := lunoratest.StartDev(t, shardhost.DefaultLocalConfig())
	base := "http://" + dev.HTTPAddr
	checkDevRoutes(t, base)

	wd := startChromedriver(t)
	room := "browser-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	var a, b *wdSession
	var errA, errB error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a, errA = wd.newSession(t, "A") }()
	go func() { defer wg.Done(); b, errB = wd.newSession(t, "B") }()
	wg.Wait()
	if err := errors.Join(errA, errB); err != nil {
		t.Fatalf("new WebDriver session: %v", err)
	}
	t.Logf("chromedriver and two browsers up after %v", time.Since(start).Round(time.Millisecond))

	// A opens the page itself; B opens / and is sent there, room and all.
	wdMust(t, a.navigate(base+"/chat/?room="+room))
	wdMust(t, b.navigate(base+"/?room="+room))
	for _, p := range []*wdSession{a, b} {
		p.waitLive(t, 0)
		var got string
		wdMust(t, p.exec(`return [document.getElementById('room').value, location.pathname].join(' ')`, &got))
		if got != room+" /chat/" {
			t.Fatalf("page %s: room field and path = %q, want %q", p.name, got, room+" /chat/")
		}
	}

	// Both pages are live before anything is sent: the message reaches them
	// as a delta, not in the first snapshot.
	hello := "hello from A " + room
	a.setField(t, "#author", "ada")
	a.setField(t, "#body", hello)
	wdMust(t, a.click("#send"))
	sent := time.Now()
	mb := b.waitMessage(t, "ada", hello)
	ma := a.waitMessage(t, "ada", hello)
	t.Logf("A's message reached B in %v", time.Since(sent).Round(time.Millisecond))
	if ma.ID != mb.ID {
		t.Fatalf("the message has data-id %s in A and %s in B", ma.ID, mb.ID)
	}
	if body := a.fieldValue(t, "#body"); body != "" {
		t.Fatalf("#body after sending = %q, want it cleared", body)
	}
	// The id shown is the row's: ask the HTTP API.
	h := lunoratest.NewHTTPClient(t, dev.HTTPAddr)
	list := messagesFromHTTP(t, mustHTTP(t, h, "messages:list", map[string]any{"room_id": room}))
	if len(list) != 1 || strconv.FormatInt(list[0].id, 10) != ma.ID || list[0].body != hello || list[0].author != "ada" {
		t.Fatalf("messages:list = %+v, want the one message the pages show as id %s", list, ma.ID)
	}

	// And back from B.
	reply := "reply from B " + room
	b.setField(t, "#author", "bob")
	b.setField(t, "#body", reply)
	wdMust(t, b.click("#send"))
	a.waitMessage(t, "bob", reply)
	b.waitMessage(t, "bob", reply)

	// B's socket drops for a while; A sends meanwhile. B reconnects and
	// resubscribes with since_seq, the last seq it applied, and gets what
	// it missed.
	before := b.info(t)
	wdMust(t, b.exec(`lunoraChat.drop(arguments[0]); return null`, nil, 3000))
	b.waitState(t, "reconnecting")
	again := "sent while B was away " + room
	a.setField(t, "#body", again)
	wdMust(t, a.click("#send"))
	a.waitMessage(t, "ada", again)
	if info := b.info(t); info.Connects != before.Connects {
		t.Logf("B reconnected before A's message was seen (a slow machine): it arrives live, not on resume")
	}
	b.waitMessage(t, "ada", again)
	b.waitLive(t, before.Connects)
	after := b.info(t)
	if before.Seq == 0 || after.Since != before.Seq || after.Seq <= before.Seq {
		t.Fatalf("B resubscribed with since_seq %d after applying seq %d, and is at seq %d; log:\n%s", after.Since, before.Seq, after.Seq, strings.Join(after.Log, "\n"))
	}
	t.Logf("B resumed after seq %d: %s", after.Since, strings.Join(after.Log[len(after.Log)-3:], "; "))

	// Each page shows the three messages once, oldest first.
	for _, p := range []*wdSession{a, b} {
		ms := p.messages(t)
		if len(ms) != 3 || ms[0].Body != hello || ms[1].Body != reply || ms[2].Body != again {
			t.Fatalf("page %s shows %+v, want [%q %q %q]", p.name, ms, hello, reply, again)
		}
	}

	// B reloads: its rows now come from a snapshot, and the keyed deltas
	// that follow must find them. An admin edits one message and deletes
	// another.
	wdMust(t, b.navigate(base+"/chat/?room="+room))
	b.waitLive(t, 0)
	if ms := b.messages(t); len(ms) != 3 {
		t.Fatalf("page B after reload shows %+v, want the 3 messages", ms)
	}
	replyID, _ := strconv.ParseInt(b.waitMessage(t, "bob", reply).ID, 10, 64)
	helloID, _ := strconv.ParseInt(ma.ID, 10, 64)
	shard := "room_id=" + room
	edited := "edited by an admin " + room
	for _, q := range []struct {
		sql    string
		params map[string]any
	}{
		{"UPDATE messages SET body = :body WHERE id = :id", map[string]any{"body": edited, "id": helloID}},
		{"DELETE FROM messages WHERE id = :id", map[string]any{"id": replyID}},
	} {
		if resp, err := h.SQL(ctxT(t), shard, q.sql, q.params); err != nil || resp.Result == nil || resp.Result.RowsAffected != 1 {
			t.Fatalf("%s: %v %v", q.sql, resp, err)
		}
	}
	for _, p := range []*wdSession{a, b} {
		var ms []shownMessage
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if ms = p.messages(t); len(ms) == 2 && ms[0].Body == edited && ms[1].Body == again {
				break
			}
		}
		if len(ms) != 2 || ms[0].Body != edited || ms[0].ID != ma.ID || ms[1].Body != again {
			t.Fatalf("page %s shows %+v after the edit and the delete, want [%s %q] then %q", p.name, ms, ma.ID, edited, again)
		}
	}
	t.Logf("browser test took %v", time.Since(start).Round(time.Millisecond))
}

// checkDevRoutes checks what dev mode serves around the page.
func checkDevRoutes(t *testing.T, base string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (*http.Response, string) {
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	if resp, _ := get("/?room=r1"); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/chat/?room=r1" {
		t.Fatalf("GET / = %d to %q, want 302 to /chat/?room=r1", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, body := get("/chat/")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") || !strings.Contains(body, `id="messages"`) {
		t.Fatalf("GET /chat/ = %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(body))
	}
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/v1/status": 200, "/v1/call": 405, "/nope": 404} {
		if resp, _ := get(path); resp.StatusCode != want {
			t.Fatalf("GET %s = %d, want %d", path, resp.StatusCode, want)
		}
	}
}

func wdMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// ---- a tiny WebDriver client --------------------------------------------

// chromedriver is a chromedriver process serving WebDriver on loopback.
type chromedriver struct {
	url     string
	hc      *http.Client
	logPath string
}

// startChromedriver starts chromedriver on a free port, in its own process
// group, which is killed (with the browsers in it) when the test ends. Its
// HOME is a temporary directory: Chromium keeps crash reports and settings
// there, not in the user's.
func startChromedriver(t *testing.T) *chromedriver {
	t.Helper()
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_CACHE_HOME="+filepath.Join(home, ".cache"))
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		port, err := wdFreePort()
		if err != nil {
			t.Fatal(err)
		}
		wd := &chromedriver{
			url:     fmt.Sprintf("http://127.0.0.1:%d", port),
			hc:      &http.Client{},
			logPath: filepath.Join(dir, fmt.Sprintf("chromedriver-%d.log", attempt)),
		}
		cmd := exec.Command(chromedriverPath, "--port="+strconv.Itoa(port), "--log-path="+wd.logPath)
		cmd.Env = env
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		started, exited := make(chan error, 1), make(chan struct{})
		go func() {
			// Started from a thread that lives as long as chromedriver
			// (the goroutine never unlocks it), so PR_SET_PDEATHSIG fires
			// only if the test binary dies: then chromedriver dies too.
			runtime.LockOSThread()
			err := cmd.Start()
			started <- err
			if err == nil {
				cmd.Wait()
				close(exited)
			}
		}()
		if err := <-started; err != nil {
			t.Fatalf("start chromedriver: %v", err)
		}
		stop := func() {
			select {
			case <-exited:
			default:
				cmd.Process.Signal(syscall.SIGTERM)
				select {
				case <-exited:
				case <-time.After(5 * time.Second):
				}
			}
			// Whatever is left of the group: chromedriver and the browsers
			// it started.
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			wd.hc.CloseIdleConnections()
			awaitStragglers(t, home)
		}
		if lastErr = wd.waitReady(exited); lastErr != nil {
			stop()
			continue
		}
		t.Cleanup(func() {
			if t.Failed() {
				if b, err := os.ReadFile(wd.logPath); err == nil {
					t.Logf("chromedriver log (tail):\n%s", wdTail(string(b), 40))
				}
			}
			stop()
		})
		return wd
	}
	t.Fatalf("chromedriver did not come up: %v", lastErr)
	return nil
}

// awaitStragglers waits for the processes outside chromedriver's group
// that name home on their command line — Chromium's crash handlers, which
// leave their process group and end soon after their browser — and kills
// those still there after 5s, so that home can be removed.
func awaitStragglers(t *testing.T, home string) {
	deadline, killed := time.Now().Add(5*time.Second), false
	for {
		var pids []int
		entries, _ := os.ReadDir("/proc")
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			if cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && bytes.Contains(cmdline, []byte(home)) {
				pids = append(pids, pid)
			}
		}
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			if killed {
				t.Logf("Chromium processes %v outlived SIGKILL", pids)
				return
			}
			t.Logf("killing Chromium processes still running after 5s: %v", pids)
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			deadline, killed = time.Now().Add(5*time.Second), true
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func wdFreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func (wd *chromedriver) waitReady(exited <-chan struct{}) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st struct {
			Ready bool `json:"ready"`
		}
		err := wd.do(context.Background(), http.MethodGet, "/status", nil, &st)
		if err == nil && st.Ready {
			return nil
		}
		select {
		case <-exited:
			return errors.New("chromedriver exited")
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("chromedriver at %s not ready after 20s: %v", wd.url, err)
		}
	}
}

// do sends one WebDriver command and decodes its "value" into out.
func (wd *chromedriver) do(ctx context.Context, method, path string, in, out any) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, wd.url+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := wd.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Value json.RawMessage `json:"value"`
	}
	if err := json.Unmarshal(raw, &env); err != nil {
		return fmt.Errorf("%s %s: %d %q", method, path, resp.StatusCode, wdTail(string(raw), 5))
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		json.Unmarshal(env.Value, &e)
		return fmt.Errorf("%s %s: %d %s: %s", method, path, resp.StatusCode, e.Error, wdFirstLine(e.Message))
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(env.Value, out)
}

// wdSession is one browser.
type wdSession struct {
	wd   *chromedriver
	id   string
	name string
}

// newSession starts a headless Chromium with a fresh profile; it quits
// when the test ends.
func (wd *chromedriver) newSession(t *testing.T, name string) (*wdSession, error) {
	profile, err := os.MkdirTemp("", "lunora-chromium-")
	if err != nil {
		return nil, err
	}
	caps := map[string]any{"capabilities": map[string]any{"alwaysMatch": map[string]any{
		"browserName": "chrome",
		"goog:chromeOptions": map[string]any{
			"binary": chromiumPath,
			"args": []string{
				"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
				"--disable-quic", "--no-first-run", "--disable-background-networking",
				"--disable-component-update", "--disable-sync", "--user-data-dir=" + profile,
			},
		},
	}}}
	var created struct {
		SessionID string `json:"sessionId"`
	}
	if err := wd.do(context.Background(), http.MethodPost, "/session", caps, &created); err != nil {
		os.RemoveAll(profile)
		return nil, err
	}
	s := &wdSession{wd: wd, id: created.SessionID, name: name}
	t.Cleanup(func() {
		if t.Failed() {
			if info, err := s.infoErr(); err == nil {
				t.Logf("page %s: %+v\n  log:\n    %s", s.name, info, strings.Join(info.Log, "\n    "))
			}
		}
		// Quitting ends the browser, so its profile can go.
		if err := wd.do(context.Background(), http.MethodDelete, "/session/"+s.id, nil, nil); err != nil {
			t.Logf("quit browser %s: %v", s.name, err)
		}
		os.RemoveAll(profile)
	})
	return s, nil
}

func (s *wdSession) cmd(method, path string, in, out any) error {
	if err := s.wd.do(context.Background(), method, "/session/"+s.id+path, in, out); err != nil {
		return fmt.Errorf("browser %s: %w", s.name, err)
	}
	return nil
}

func (s *wdSession) navigate(url string) error {
	return s.cmd(http.MethodPost, "/url", map[string]any{"url": url}, nil)
}

// find returns the WebDriver id of the element css selects.
func (s *wdSession) find(css string) (string, error) {
	var el map[string]string
	if err := s.cmd(http.MethodPost, "/element", map[string]any{"using": "css selector", "value": css}, &el); err != nil {
		return "", err
	}
	id := el[webElementKey]
	if id == "" {
		return "", fmt.Errorf("browser %s: element %s: no element reference in %v", s.name, css, el)
	}
	return id, nil
}

// webElementKey names the element reference in WebDriver answers.
const webElementKey = "element-6066-11e4-a52e-4f735466cecf"

func (s *wdSession) click(css string) error {
	id, err := s.find(css)
	if err != nil {
		return err
	}
	return s.cmd(http.MethodPost, "/element/"+id+"/click", map[string]any{}, nil)
}

// setField clears an input and types text into it, as a person would.
func (s *wdSession) setField(t *testing.T, css, text string) {
	t.Helper()
	id, err := s.find(css)
	wdMust(t, err)
	wdMust(t, s.cmd(http.MethodPost, "/element/"+id+"/clear", map[string]any{}, nil))
	wdMust(t, s.cmd(http.MethodPost, "/element/"+id+"/value", map[string]any{"text": text}, nil))
}

func (s *wdSession) fieldValue(t *testing.T, css string) string {
	t.Helper()
	var v string
	wdMust(t, s.exec(`return document.querySelector(arguments[0]).value`, &v, css))
	return v
}

// exec runs a script in the page and decodes what it returns into out.
func (s *wdSession) exec(script string, out any, args ...any) error {
	if args == nil {
		args = []any{}
	}
	return s.cmd(http.MethodPost, "/execute/sync", map[string]any{"script": script, "args": args}, out)
}

type pageInfo struct {
	Room     string   `json:"room"`
	Seq      uint64   `json:"seq"`
	Since    uint64   `json:"since"`
	State    string   `json:"state"`
	Settled  bool     `json:"settled"`
	Connects int      `json:"connects"`
	Rows     int      `json:"rows"`
	Log      []string `json:"log"`
}

func (s *wdSession) infoErr() (pageInfo, error) {
	var info pageInfo
	err := s.exec(`return window.lunoraChat ? lunoraChat.info() : {state: 'no lunoraChat'}`, &info)
	return info, err
}

func (s *wdSession) info(t *testing.T) pageInfo {
	t.Helper()
	info, err := s.infoErr()
	wdMust(t, err)
	return info
}

// waitState waits until the page's #status is in state.
func (s *wdSession) waitState(t *testing.T, state string) {
	t.Helper()
	var info pageInfo
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if info = s.info(t); info.State == state {
			return
		}
	}
	t.Fatalf("page %s not %s after 20s: %+v", s.name, state, info)
}

// waitLive waits until the page's subscription has settled on a socket
// opened after connects earlier ones.
func (s *wdSession) waitLive(t *testing.T, connects int) {
	t.Helper()
	var info pageInfo
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		info = s.info(t)
		if info.State == "live" && info.Settled && info.Connects > connects {
			return
		}
	}
	t.Fatalf("page %s not live after 20s: %+v", s.name, info)
}

type shownMessage struct {
	ID     string `json:"id"`
	Author string `json:"author"`
	Body   string `json:"body"`
}

// messages reads #messages: every child must be a message with a data-id.
func (s *wdSession) messages(t *testing.T) []shownMessage {
	t.Helper()
	var ms []shownMessage
	wdMust(t, s.exec(`return Array.from(document.getElementById('messages').children).map(function (li) {
		var a = li.querySelector('.author'), b = li.querySelector('.body');
		return {id: li.dataset.id || '', author: a ? a.textContent : '', body: b ? b.textContent : ''};
	})`, &ms))
	for _, m := range ms {
		if m.ID == "" {
			t.Fatalf("page %s: a child of #messages without data-id: %+v", s.name, ms)
		}
	}
	return ms
}

// waitMessage waits up to 20s for #messages to show body by author, once.
func (s *wdSession) waitMessage(t *testing.T, author, body string) shownMessage {
	t.Helper()
	var ms []shownMessage
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ms = s.messages(t)
		var found []shownMessage
		for _, m := range ms {
			if m.Body == body {
				found = append(found, m)
			}
		}
		switch {
		case len(found) > 1:
			t.Fatalf("page %s shows %q %d times: %+v", s.name, body, len(found), ms)
		case len(found) == 1:
			if found[0].Author != author {
				t.Fatalf("page %s shows %q by %q, want %q", s.name, body, found[0].Author, author)
			}
			return found[0]
		}
	}
	info := s.info(t)
	t.Fatalf("page %s did not show %q within 20s; it shows %+v; state %s seq %d\n  log:\n    %s", s.name, body, ms, info.State, info.Seq, strings.Join(info.Log, "\n    "))
	return shownMessage{}
}

func wdTail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func wdFirstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
