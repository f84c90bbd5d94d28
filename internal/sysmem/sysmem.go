package sysmem

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// ErrUnsupported reports a system without /proc/meminfo.
var ErrUnsupported = errors.New("sysmem: no /proc/meminfo on this system")

// ErrMalformed reports a /proc or cgroup file that does not parse.
var ErrMalformed = errors.New("sysmem: malformed memory file")

// Available returns the bytes of memory available to a new allocation on
// this machine: MemAvailable, capped by the cgroup v2 limit of this process
// when one is set. Errors wrap ErrUnsupported or ErrMalformed.
func Available() (int64, error) { return AvailableFS(os.DirFS("/")) }

// AvailableFS is Available with the file system root fsys, which holds
// proc/meminfo, proc/self/cgroup and sys/fs/cgroup (tests pass an
// fstest.MapFS).
func AvailableFS(fsys fs.FS) (int64, error) {
	mi, err := fs.ReadFile(fsys, "proc/meminfo")
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("%w: %w", ErrUnsupported, err)
		}
		return 0, err
	}
	avail, err := parseMemAvailable(mi)
	if err != nil {
		return 0, err
	}
	if left, ok := cgroupLeft(fsys); ok && left < avail {
		avail = left
	}
	return avail, nil
}

// parseMemAvailable returns the MemAvailable line of /proc/meminfo in bytes.
func parseMemAvailable(meminfo []byte) (int64, error) {
	sc := bufio.NewScanner(bytes.NewReader(meminfo))
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 || len(f) > 2 || (len(f) == 2 && f[1] != "kB") {
			return 0, fmt.Errorf("%w: /proc/meminfo: MemAvailable:%s", ErrMalformed, rest)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || kb < 0 || kb > 1<<53 {
			return 0, fmt.Errorf("%w: /proc/meminfo: MemAvailable %q", ErrMalformed, f[0])
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("%w: /proc/meminfo has no MemAvailable line", ErrMalformed)
}

// parseCgroupLimit parses a cgroup v2 memory.max file: ok is false for
// "max" (no limit).
func parseCgroupLimit(data []byte) (limit int64, ok bool, err error) {
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return 0, false, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("%w: memory.max %q", ErrMalformed, s)
	}
	return n, true, nil
}

// cgroupPath returns the cgroup v2 path of this process ("0::/path" in
// /proc/self/cgroup), relative to sys/fs/cgroup.
func cgroupPath(fsys fs.FS) (string, bool) {
	data, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			p = strings.Trim(p, "/")
			if p == "" {
				return "sys/fs/cgroup", true
			}
			return "sys/fs/cgroup/" + p, true
		}
	}
	return "", false
}

// cgroupLeft returns memory.max − memory.current of this process's cgroup
// v2, when a limit is set and both files read.
func cgroupLeft(fsys fs.FS) (int64, bool) {
	dir, ok := cgroupPath(fsys)
	if !ok {
		return 0, false
	}
	data, err := fs.ReadFile(fsys, dir+"/memory.max")
	if err != nil {
		return 0, false
	}
	limit, ok, err := parseCgroupLimit(data)
	if err != nil || !ok {
		return 0, false
	}
	var used int64
	if cur, err := fs.ReadFile(fsys, dir+"/memory.current"); err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(cur)), 10, 64); err == nil && n >= 0 {
			used = n
		}
	}
	return max(0, limit-used), true
}
