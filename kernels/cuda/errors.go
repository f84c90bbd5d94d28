package cuda

import "errors"

var (
	// ErrNotBuilt is returned by New in a binary built without the cuda tag.
	ErrNotBuilt = errors.New("cuda: this binary was built without CUDA support (rebuild with -tags cuda)")
	// ErrNoDevice is returned by New when the requested device does not exist.
	ErrNoDevice = errors.New("cuda: no such CUDA device")
	// ErrUnsupported is returned by New for a GPU older than compute capability 8.0.
	ErrUnsupported = errors.New("cuda: unsupported GPU (need compute capability 8.0 or newer)")
)
