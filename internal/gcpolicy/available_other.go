//go:build !linux

package gcpolicy

import "errors"

func available() (int64, error) { return 0, errors.New("the size of memory is unknown on this system") }
