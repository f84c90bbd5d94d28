package sysmem

import (
	"errors"
	"testing"
	"testing/fstest"
)

const meminfo = "MemTotal:       32000000 kB\nMemFree:         1000000 kB\nMemAvailable:   20000000 kB\n"

func TestAvailableFS(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	for _, tc := range []struct {
		name    string
		fs      fstest.MapFS
		want    int64
		wantErr error
	}{
		{"no proc", fstest.MapFS{}, 0, ErrUnsupported},
		{"meminfo only", fstest.MapFS{"proc/meminfo": file(meminfo)}, 20000000 << 10, nil},
		{"cgroup v1 only", fstest.MapFS{"proc/meminfo": file(meminfo), "proc/self/cgroup": file("4:memory:/x\n")}, 20000000 << 10, nil},
		{"cgroup without limit", fstest.MapFS{
			"proc/meminfo": file(meminfo), "proc/self/cgroup": file("0::/a/b\n"),
			"sys/fs/cgroup/a/b/memory.max": file("max\n"),
		}, 20000000 << 10, nil},
		{"cgroup limit below MemAvailable", fstest.MapFS{
			"proc/meminfo": file(meminfo), "proc/self/cgroup": file("0::/a/b\n"),
			"sys/fs/cgroup/a/b/memory.max":     file("8589934592\n"),
			"sys/fs/cgroup/a/b/memory.current": file("1073741824\n"),
		}, 7 << 30, nil},
		{"cgroup limit above MemAvailable", fstest.MapFS{
			"proc/meminfo": file(meminfo), "proc/self/cgroup": file("0::/\n"),
			"sys/fs/cgroup/memory.max": file("1099511627776\n"),
		}, 20000000 << 10, nil},
		{"cgroup over its limit", fstest.MapFS{
			"proc/meminfo": file(meminfo), "proc/self/cgroup": file("0::/c\n"),
			"sys/fs/cgroup/c/memory.max":     file("100\n"),
			"sys/fs/cgroup/c/memory.current": file("200\n"),
		}, 0, nil},
		{"no MemAvailable", fstest.MapFS{"proc/meminfo": file("MemTotal: 1 kB\n")}, 0, ErrMalformed},
		{"bad MemAvailable", fstest.MapFS{"proc/meminfo": file("MemAvailable: lots kB\n")}, 0, ErrMalformed},
		{"bad unit", fstest.MapFS{"proc/meminfo": file("MemAvailable: 5 MB\n")}, 0, ErrMalformed},
		{"bad memory.max ignored", fstest.MapFS{
			"proc/meminfo": file(meminfo), "proc/self/cgroup": file("0::/c\n"),
			"sys/fs/cgroup/c/memory.max": file("lots\n"),
		}, 20000000 << 10, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := AvailableFS(tc.fs)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("AvailableFS() error = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("AvailableFS() = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestParseCgroupLimit(t *testing.T) {
	for _, tc := range []struct {
		in      string
		limit   int64
		ok, err bool
	}{
		{"max\n", 0, false, false},
		{"1024\n", 1024, true, false},
		{"-1", 0, false, true},
		{"", 0, false, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			limit, ok, err := parseCgroupLimit([]byte(tc.in))
			if limit != tc.limit || ok != tc.ok || (err != nil) != tc.err {
				t.Errorf("parseCgroupLimit(%q) = %d, %v, %v; want %d, %v, error %v", tc.in, limit, ok, err, tc.limit, tc.ok, tc.err)
			}
		})
	}
}

// TestAvailableHere reads this machine's figure: positive, or unsupported.
func TestAvailableHere(t *testing.T) {
	n, err := Available()
	if errors.Is(err, ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil || n <= 0 {
		t.Errorf("Available() = %d, %v", n, err)
	}
}
