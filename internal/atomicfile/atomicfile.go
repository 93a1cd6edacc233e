// Package atomicfile writes files so that a crash leaves either the old
// file or the new one whole: a temp file in the same directory, synced,
// renamed over the target, and the directory synced. A crash between the
// temp file and the rename leaves the temp file, which may hold what the
// new file would have (secrets included): RemoveStale, at the next open,
// removes it.
package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
)

// Options adjust WriteWith.
type Options struct {
	// BeforeRename runs between the synced temp file and the rename; an
	// error from it fails the write (the temp file removed). Tests stand a
	// crash there.
	BeforeRename func() error
}

// Write replaces path with data, with permissions perm.
func Write(path string, data []byte, perm os.FileMode) error {
	return WriteWith(path, data, perm, Options{})
}

// tempPattern is the temp files' name beside path: hidden, and known to
// RemoveStale.
func tempPattern(path string) string { return "." + filepath.Base(path) + ".tmp-*" }

// WriteWith is Write with options.
func WriteWith(path string, data []byte, perm os.FileMode, o Options) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, tempPattern(path))
	if err != nil {
		return fmt.Errorf("atomicfile: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, a no-op
	if err = tmp.Chmod(perm); err == nil {
		if _, err = tmp.Write(data); err == nil {
			err = tmp.Sync()
		}
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil && o.BeforeRename != nil {
		err = o.BeforeRename()
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("atomicfile: %s: %w", path, err)
	}
	if d, err := os.Open(dir); err == nil {
		// The rename is durable only once the directory entry is.
		err = d.Sync()
		d.Close()
		if err != nil {
			return fmt.Errorf("atomicfile: fsync directory %s: %w", dir, err)
		}
	}
	return nil
}

// Stale lists the temp files a crashed write of path left.
func Stale(path string) ([]string, error) {
	return filepath.Glob(filepath.Join(filepath.Dir(path), tempPattern(path)))
}

// RemoveStale removes the temp files a crashed write of path left, and
// says how many. Only the file's owner may call it: a write in progress
// elsewhere would lose its temp file.
func RemoveStale(path string) (int, error) {
	left, err := Stale(path)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, p := range left {
		if err := os.Remove(p); err != nil && !os.IsNotExist(err) {
			return n, fmt.Errorf("atomicfile: remove stale %s: %w", p, err)
		}
		n++
	}
	return n, nil
}
