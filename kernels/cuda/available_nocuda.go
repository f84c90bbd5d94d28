//go:build !cuda

package cuda

import "github.com/moemesh/moemesh/kernels"

// Built reports whether this binary includes the CUDA backend.
const Built = false

// New returns ErrNotBuilt: this binary was built without the cuda tag.
func New(device int) (kernels.Backend, error) {
	return nil, ErrNotBuilt
}
