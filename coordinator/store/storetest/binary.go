package storetest

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/moemesh/moemesh/internal/syncio"
)

// startBinary runs the etcd binary and waits until /health answers.
func (e *Etcd) startBinary() (func(), error) {
	bin := os.Getenv("MOEMESH_ETCD_BIN")
	cmd := exec.Command(bin,
		"--name", "storetest",
		"--data-dir", e.dir,
		"--listen-client-urls", e.clientURL,
		"--advertise-client-urls", e.clientURL,
		"--listen-peer-urls", e.peerURL,
		"--initial-advertise-peer-urls", e.peerURL,
		"--initial-cluster", "storetest="+e.peerURL,
		"--log-level", "error",
	)
	stderr := syncio.Buffer{Limit: 64 << 10}
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}

	deadline := time.Now().Add(startTimeout)
	for {
		if healthy(e.clientURL) {
			return stop, nil
		}
		select {
		case <-exited:
			return nil, fmt.Errorf("%s exited while starting: %s\n%s", bin, cmd.ProcessState, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("%s not healthy within %v:\n%s", bin, startTimeout, stderr.String())
		}
	}
}

// healthy reports whether etcd at url answers /health with health true.
func healthy(url string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/health", nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var body [256]byte
	n, _ := resp.Body.Read(body[:])
	return resp.StatusCode == http.StatusOK && bytes.Contains(body[:n], []byte(`"health":"true"`))
}
