// Package e2e tests the running platform from outside, as a client would:
// it builds the mercato binary, starts `mercato up` in a fresh namespace and
// drives the public API through the gateway.
package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mercato/mercato/platform/config"
	"github.com/mercato/mercato/platform/platformtest"
)

// The admin account identity bootstraps for the test platform.
const (
	adminEmail    = "admin@e2e.example"
	adminPassword = "e2e admin password, long enough"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mercato-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "mercato")
	build := exec.Command("go", "build", "-o", binary, "github.com/mercato/mercato/cmd/mercato")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build mercato:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// platform is one `mercato up` run.
type platform struct {
	t    *testing.T
	cmd  *exec.Cmd
	url  string
	data string
	out  *platformtest.Buffer
	done chan error
}

// testNamespace returns a configuration in a fresh namespace whose
// databases and keys are removed after the test.
func testNamespace(t *testing.T) config.Config {
	t.Helper()
	cfg := platformtest.Config(t)
	platformtest.DropDatabasesAfter(t, cfg)
	platformtest.Redis(t, cfg)
	return cfg
}

// startPlatform runs `mercato up` with extra arguments and environment and
// waits until the gateway serves products.
func startPlatform(t *testing.T, cfg config.Config, args []string, env ...string) *platform {
	t.Helper()
	addr := platformtest.ClosedAddr(t)
	p := &platform{t: t, url: "http://" + addr, data: t.TempDir(), out: &platformtest.Buffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(binary, append([]string{"up", "--http", addr, "--data", p.data}, args...)...)
	p.cmd.Env = append(os.Environ(),
		"MERCATO_NAMESPACE="+cfg.Namespace,
		"MERCATO_ADMIN_EMAIL="+adminEmail,
		"MERCATO_ADMIN_PASSWORD="+adminPassword,
		"MERCATO_POSTGRES_URL="+cfg.Postgres.URL,
		"MERCATO_REDIS_URL="+cfg.Redis.URL,
		"MERCATO_CONFIG="+filepath.Join(p.data, "mercato.yaml"),
	)
	p.cmd.Env = append(p.cmd.Env, env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.stop()
		}
		if t.Failed() {
			t.Logf("mercato up output:\n%s", tail(p.out.String(), 80))
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case err := <-p.done:
			t.Fatalf("mercato up exited early (%v):\n%s", err, p.out.String())
		default:
		}
		if r, err := http.Get(p.url + "/v1/products?page_size=1"); err == nil {
			body, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode == 200 && bytes.Contains(body, []byte(`"items":[{`)) {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("platform not serving products after 90s:\n%s", tail(p.out.String(), 60))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop sends SIGTERM and requires a clean exit with no process left behind.
func (p *platform) stop() {
	p.t.Helper()
	children := childPIDs(p.cmd.Process.Pid)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			p.t.Errorf("mercato up exited with %v after SIGTERM", err)
		}
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		p.t.Errorf("mercato up did not stop within 60s of SIGTERM")
		<-p.done
	}
	for _, pid := range children {
		if syscall.Kill(pid, 0) == nil {
			p.t.Errorf("service process %d outlived mercato up", pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// childPIDs lists the processes whose parent is pid.
func childPIDs(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) {
			out = append(out, n)
		}
	}
	return out
}

// servicePID finds the child process running `serve name`.
func (p *platform) servicePID(name string) int {
	for _, pid := range childPIDs(p.cmd.Process.Pid) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmdline), "serve\x00"+name) {
			return pid
		}
	}
	return 0
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// noRedirects shows each answer as the gateway gave it, redirects included.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (p *platform) do(method, path string, body any, headers ...string) response {
	p.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, p.url+path, rd)
	if err != nil {
		p.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{resp.StatusCode, resp.Header, b}
}

func (r response) decode(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %q: %v", r.body, err)
	}
}

func (r response) isProblem(t *testing.T, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("content type %q for a %d", ct, status)
	}
	var p struct {
		Type   string
		Status int
	}
	r.decode(t, &p)
	if p.Status != status || p.Type == "" {
		t.Fatalf("problem body %s", r.body)
	}
}

// tokens is what a login or refresh answers.
type tokens struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int    `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	IDToken      string `json:"id_token"`
}

// login signs in through the gateway and returns the tokens.
func (p *platform) login(email, password string) tokens {
	p.t.Helper()
	r := p.do("POST", "/v1/auth/login", map[string]string{"email": email, "password": password})
	if r.status != http.StatusOK {
		p.t.Fatalf("login %s: %d %s", email, r.status, r.body)
	}
	var tok tokens
	r.decode(p.t, &tok)
	return tok
}

// bearer returns the Authorization header pair for an access token.
func bearer(access string) []string { return []string{"Authorization", "Bearer " + access} }
