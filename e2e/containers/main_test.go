//go:build containers

package containers_test

import (
	"bufio"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var (
	// runID makes every container, network and image name of this run
	// unique on the engine.
	runID string
	// skipReason is set when no Docker engine answers.
	skipReason string
	// moemeshImage and etcdImage are the images this run built.
	moemeshImage, etcdImage string
	// binary is the static moemesh built with the images; it runs on the
	// host too (gen-model, certs, the single-process reference).
	binary string
	// modelDir is the tiny model, bind-mounted read-only at the same path
	// in every container.
	modelDir string
	// caDir holds the cluster CA; secretsDir the files every container
	// mounts at /secrets (gossip key, API keys, admin token).
	caDir, secretsDir string
	// pkiDir/<host> is each member's --cluster-tls-dir.
	pkiDir string
	apiKey string
)

// TestMain builds the images with scripts/docker-build.sh (unique names,
// removed at the end), the tiny model and the cluster CA, then runs the
// tests.
func TestMain(m *testing.M) {
	os.Exit(func() int {
		if out, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
			skipReason = fmt.Sprintf("no Docker engine answers (docker info: %v: %s)", err, strings.TrimSpace(string(out)))
			if os.Getenv("MOEMESH_REQUIRE_DOCKER") == "1" {
				fmt.Fprintln(os.Stderr, "MOEMESH_REQUIRE_DOCKER=1 but", skipReason)
				return 1
			}
			return m.Run()
		}
		b := make([]byte, 4)
		if _, err := rand.Read(b); err != nil {
			panic(err)
		}
		runID = "mmct-" + hex.EncodeToString(b)
		dir, err := os.MkdirTemp("", runID+"-")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		refs, err := buildImages(dir)
		defer removeImages(refs)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if err := prepare(dir); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}())
}

// needDocker skips the test when no engine answers.
func needDocker(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}

// buildImages runs scripts/docker-build.sh and returns every tag it made.
func buildImages(dir string) ([]string, error) {
	start := time.Now()
	cmd := exec.Command("../../scripts/docker-build.sh", "--image", runID+"-moemesh", "--etcd-image", runID+"-etcd",
		"--bin-dir", filepath.Join(dir, "bin"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	var refs []string
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		kind, ref, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			return refs, fmt.Errorf("docker-build.sh printed %q, want \"KIND REF\"", sc.Text())
		}
		refs = append(refs, ref)
		switch {
		case kind == "moemesh" && moemeshImage == "":
			moemeshImage = ref
		case kind == "etcd" && etcdImage == "":
			etcdImage = ref
		}
	}
	if err != nil {
		return refs, fmt.Errorf("scripts/docker-build.sh: %v", err)
	}
	if moemeshImage == "" || etcdImage == "" {
		return refs, fmt.Errorf("docker-build.sh printed %q: want a moemesh and an etcd image", out)
	}
	binary = filepath.Join(dir, "bin", "moemesh")
	fmt.Fprintf(os.Stderr, "images %s and %s built in %v\n", moemeshImage, etcdImage, time.Since(start).Round(time.Second))
	return refs, nil
}

func removeImages(refs []string) {
	for _, ref := range refs {
		if _, err := docker("rmi", ref); err != nil {
			fmt.Fprintln(os.Stderr, "removing image:", err)
		}
	}
}

// prepare makes the model, the CA and the shared secrets. The containers
// run as uid 65532, so what they mount is world-readable; dir itself
// (0700) keeps other users of the host out.
func prepare(dir string) error {
	modelDir = filepath.Join(dir, "model")
	if out, err := exec.Command(binary, "gen-model", "--preset", "tiny", "--out", modelDir).CombinedOutput(); err != nil {
		return fmt.Errorf("gen-model: %v\n%s", err, out)
	}
	caDir = filepath.Join(dir, "ca")
	if out, err := exec.Command(binary, "certs", "init", "--out", caDir).CombinedOutput(); err != nil {
		return fmt.Errorf("certs init: %v\n%s", err, out)
	}
	secretsDir = filepath.Join(dir, "secrets")
	if err := os.Mkdir(secretsDir, 0o755); err != nil {
		return err
	}
	key := make([]byte, 32)
	tok := make([]byte, 16)
	api := make([]byte, 16)
	for _, b := range [][]byte{key, tok, api} {
		if _, err := rand.Read(b); err != nil {
			return err
		}
	}
	apiKey = hex.EncodeToString(api)
	for name, content := range map[string]string{
		"gossip.key":  base64.StdEncoding.EncodeToString(key),
		"api.keys":    apiKey,
		"admin.token": hex.EncodeToString(tok),
	} {
		if err := os.WriteFile(filepath.Join(secretsDir, name), []byte(content+"\n"), 0o644); err != nil {
			return err
		}
	}
	pkiDir = filepath.Join(dir, "pki")
	for _, m := range members() {
		if out, err := exec.Command(binary, "certs", "issue", "--ca", caDir, "--role", m.role, "--name", m.host,
			"--dns", m.host, "--out", filepath.Join(pkiDir, m.host)).CombinedOutput(); err != nil {
			return fmt.Errorf("certs issue %s: %v\n%s", m.host, err, out)
		}
	}
	if err := readable(pkiDir); err != nil {
		return err
	}
	return readable(modelDir)
}

// member is a coordinator or worker of the test cluster: its host name on
// the network, which its certificate names, and its certificate's role.
type member struct{ host, role string }

func members() []member {
	var ms []member
	for i := range coordinators {
		ms = append(ms, member{fmt.Sprintf("c%d", i), "coordinator"})
	}
	for i := range workers + spares {
		ms = append(ms, member{fmt.Sprintf("w%d", i), "worker"})
	}
	return ms
}

// readable opens dir's tree to every user (the containers' uid).
func readable(dir string) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if d.IsDir() {
			mode = 0o755
		}
		return os.Chmod(p, mode)
	})
}
