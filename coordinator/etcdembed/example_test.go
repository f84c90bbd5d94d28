package etcdembed_test

import (
	"context"
	"fmt"
	"os"

	"github.com/moemesh/moemesh/coordinator/etcdembed"
)

func Example() {
	dir, err := os.MkdirTemp("", "etcd")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	cfg := etcdembed.DefaultConfig(dir)
	cfg.Log = nil // quiet
	e, err := etcdembed.Start(context.Background(), cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer e.Close()
	fmt.Println(len(e.Endpoints()), "endpoint")
	// Output: 1 endpoint
}
