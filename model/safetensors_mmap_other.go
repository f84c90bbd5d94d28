//go:build !unix

package model

import "os"

// mapFile reads path into memory on systems without mmap support here.
func mapFile(path string) (data []byte, release func() error, err error) {
	data, err = os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	return data, func() error { return nil }, nil
}
