// Command etcd is the etcd server, pinned to the version moemesh is tested
// against. scripts/build-etcd.sh builds it; it lives in its own module so the
// root module's go vet and go test leave it alone.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
