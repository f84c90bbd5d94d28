package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moemesh/moemesh/client"
	"github.com/moemesh/moemesh/coordinator/clustertest"
)

var (
	binary    string
	ctlBinary string
	modelDir  string
)

// TestMain builds the moemesh command and the tiny demo model (with the
// real Qwen3 tokenizer and template) once.
func TestMain(m *testing.M) {
	os.Exit(func() int {
		dir, err := os.MkdirTemp("", "e2e-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		if binary, err = clustertest.Build(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		ctlBinary = filepath.Join(dir, "moemeshctl")
		if out, err := exec.Command("go", "build", "-o", ctlBinary, "github.com/moemesh/moemesh/cmd/moemeshctl").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "building moemeshctl: %v\n%s", err, out)
			return 1
		}
		modelDir = filepath.Join(dir, "model")
		if out, err := exec.Command(binary, "gen-model", "--preset", "tiny", "--out", modelDir).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "gen-model: %v\n%s", err, out)
			return 1
		}
		return m.Run()
	}())
}

// local is a running `moemesh local` process.
type local struct {
	grpc, http string
	cmd        *exec.Cmd
	mu         sync.Mutex
	out        strings.Builder
}

func (l *local) log() string { l.mu.Lock(); defer l.mu.Unlock(); return l.out.String() }

var localAddrs = regexp.MustCompile(`gRPC API on (\S+), HTTP on http://(\S+) `)

// startLocal runs `moemesh local` on the test model with args added, waits
// for its ready line, and stops it (SIGINT, then SIGKILL after 15 s) when
// the test ends.
func startLocal(t *testing.T, args ...string) *local {
	t.Helper()
	l := &local{}
	l.cmd = exec.Command(binary, append([]string{"local", "--model", modelDir, "--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, args...)...)
	l.cmd.Env = append(os.Environ(), "MOEMESH_CACHE="+t.TempDir())
	pr, pw := io.Pipe()
	l.cmd.Stdout, l.cmd.Stderr = pw, pw
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			l.mu.Lock()
			l.out.WriteString(sc.Text() + "\n")
			if m := localAddrs.FindStringSubmatch(sc.Text()); m != nil {
				l.grpc, l.http = m[1], m[2]
			}
			l.mu.Unlock()
			if strings.HasPrefix(sc.Text(), "moemesh local: ready") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	exited := make(chan error, 1)
	go func() { exited <- l.cmd.Wait(); pw.Close() }()
	t.Cleanup(func() {
		l.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			l.cmd.Process.Kill()
			<-exited
			t.Errorf("moemesh local ignored SIGINT for 15 s:\n%s", l.log())
		}
	})
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("moemesh local exited: %v\n%s", err, l.log())
	case <-time.After(3 * time.Minute):
		t.Fatalf("moemesh local not ready after 3 min:\n%s", l.log())
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.grpc == "" {
		t.Fatalf("moemesh local printed no addresses:\n%s", l.out.String())
	}
	return l
}

// dial returns an SDK client of addrs, closed when the test ends.
func dial(t *testing.T, addrs ...string) *client.Client {
	t.Helper()
	c, err := client.Dial(addrs, client.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// moemesh runs the moemesh command and returns its stdout.
func moemesh(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), "MOEMESH_CACHE="+t.TempDir())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("moemesh %v: %v\n%s", args, err, stderr.String())
	}
	return string(out)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
