// Command moemesh runs, serves and inspects Qwen3 Mixture-of-Experts models.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], defaultStreams()))
}
