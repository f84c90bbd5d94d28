package sysmem_test

import (
	"fmt"
	"testing/fstest"

	"github.com/moemesh/moemesh/internal/sysmem"
)

// A 4 GiB cgroup limit with 1 GiB used leaves 3 GiB, less than MemAvailable.
func Example() {
	root := fstest.MapFS{
		"proc/meminfo":                     {Data: []byte("MemAvailable: 16777216 kB\n")},
		"proc/self/cgroup":                 {Data: []byte("0::/job\n")},
		"sys/fs/cgroup/job/memory.max":     {Data: []byte("4294967296\n")},
		"sys/fs/cgroup/job/memory.current": {Data: []byte("1073741824\n")},
	}
	n, err := sysmem.AvailableFS(root)
	fmt.Println(n>>30, "GiB", err)
	// Output: 3 GiB <nil>
}
