package kernels

// SetFeatures restricts the kernels to the instruction set named ("avx512"
// without AVX512_BF16, "avx2"
// or "generic") for a test, and returns a function that restores them.
func SetFeatures(name string) (restore func()) {
	return setFeatures(name)
}
