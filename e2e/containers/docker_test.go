//go:build containers

package containers_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// dockerTimeout bounds every docker command: the engine answers a run,
// kill or inspect within seconds even on a loaded machine.
const dockerTimeout = 2 * time.Minute

// docker runs the docker CLI and returns its trimmed stdout.
func docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// mustDocker is docker that fails the test on an error.
func mustDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := docker(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// container is one running container on the cluster's network.
type container struct {
	name string // unique on the engine
	host string // its host name on the network (w0, c1, etcd2, ...)
	ip   string // its address on the network
}

// run starts a detached container named name with host name host on
// network net and returns it with its address. It is removed (with its
// anonymous volumes) when the test ends; its log is printed first when the
// test failed.
func run(t testing.TB, network, name, host string, opts []string, image string, args ...string) *container {
	t.Helper()
	all := []string{"run", "-d", "--name", name, "--hostname", host, "--network", network, "--network-alias", host,
		"--label", "io.moemesh.test=" + runID}
	all = append(append(append(all, opts...), image), args...)
	if _, err := docker(all...); err != nil {
		// A failed run may still have created the container.
		_, _ = docker("rm", "-f", "-v", name)
		t.Fatal(err)
	}
	c := &container{name: name, host: host}
	t.Cleanup(func() {
		if t.Failed() {
			logs, _ := dockerLogs(name)
			t.Logf("--- %s (%s) log:\n%s", host, name, logs)
		}
		if _, err := docker("rm", "-f", "-v", name); err != nil {
			t.Errorf("removing container %s: %v", name, err)
		}
	})
	c.ip = c.addr(t, network)
	return c
}

// addr reads the container's address on network.
func (c *container) addr(t testing.TB, network string) string {
	t.Helper()
	ip := mustDocker(t, "inspect", "-f", fmt.Sprintf(`{{(index .NetworkSettings.Networks %q).IPAddress}}`, network), c.name)
	if ip == "" {
		logs, _ := dockerLogs(c.name)
		t.Fatalf("container %s has no address on %s (exited?):\n%s", c.name, network, logs)
	}
	return ip
}

func dockerLogs(name string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "logs", "--tail", "200", name).CombinedOutput()
	return string(out), err
}

// kill stops the container as SIGKILL would.
func (c *container) kill(t testing.TB) { t.Helper(); mustDocker(t, "kill", c.name) }

// pause and unpause freeze and thaw every process of the container.
func (c *container) pause(t testing.TB)   { t.Helper(); mustDocker(t, "pause", c.name) }
func (c *container) unpause(t testing.TB) { t.Helper(); mustDocker(t, "unpause", c.name) }

// restart stops the container (SIGTERM, SIGKILL after grace) and starts it
// again with the same name, host name and command.
func (c *container) restart(t testing.TB, grace time.Duration) {
	t.Helper()
	mustDocker(t, "restart", "-t", fmt.Sprint(int(grace.Seconds())), c.name)
}

// network makes a private bridge network removed when the test ends
// (after the containers on it: cleanups run last first).
func network(t testing.TB, name string) {
	t.Helper()
	mustDocker(t, "network", "create", "--driver", "bridge", "--label", "io.moemesh.test="+runID, name)
	t.Cleanup(func() {
		if _, err := docker("network", "rm", name); err != nil {
			t.Errorf("removing network %s: %v", name, err)
		}
	})
}
