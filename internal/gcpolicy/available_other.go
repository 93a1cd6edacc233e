//go:build !linux

package gcpolicy

import "errors"

// Available is the memory the process may use; unknown here.
func Available() (int64, error) { return 0, errors.New("the size of memory is unknown on this system") }
