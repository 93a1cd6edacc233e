package atomicfile

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWriteReplacesWholeAndLeavesNoTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	require.NoError(t, Write(p, []byte("one"), 0o600))
	require.NoError(t, Write(p, []byte("two, longer"), 0o644))
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	assert.Equal(t, "two, longer", string(b))
	info, err := os.Stat(p)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), info.Mode().Perm())
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Len(t, entries, 1, "no temp file left behind")
	assert.Error(t, Write(filepath.Join(dir, "missing", "f"), nil, 0o600))
}

// A write that fails before its rename leaves the old file and no temp
// file; a crash's temp file is found and removed by RemoveStale.
func TestFailedWriteAndStaleTemp(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	require.NoError(t, Write(p, []byte("old"), 0o600))
	err := WriteWith(p, []byte("secret"), 0o600, Options{BeforeRename: func() error { return os.ErrDeadlineExceeded }})
	require.Error(t, err)
	b, _ := os.ReadFile(p)
	assert.Equal(t, "old", string(b))
	entries, _ := os.ReadDir(dir)
	assert.Len(t, entries, 1, "the failed write's temp file is gone")

	require.NoError(t, os.WriteFile(filepath.Join(dir, ".f.tmp-123"), []byte("secret"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, ".other.tmp-9"), []byte("x"), 0o600))
	n, err := RemoveStale(p)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	entries, _ = os.ReadDir(dir)
	assert.Len(t, entries, 2, "only f's temp file is removed")
}
