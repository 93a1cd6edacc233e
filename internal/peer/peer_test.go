package peer

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPeersListParses(t *testing.T) {
	_, err := parse("lonely\n")
	assert.ErrorContains(t, err, "peers.txt:1")
	ps, err := Peers()
	require.NoError(t, err)
	names := map[string]Peer{}
	for _, p := range ps {
		assert.NotEmpty(t, p.Packages, p.Name)
		names[p.Name] = p
	}
	for _, n := range []string{"curl", "openssl", "tshark", "dnsmasq", "amttool", "ip", "ping"} {
		assert.Contains(t, names, n)
	}
	assert.Equal(t, []string{"amtterm", "libsoap-lite-perl", "liblwp-protocol-https-perl"}, names["amttool"].Packages)
}

func TestLookup(t *testing.T) {
	assert.ErrorContains(t, Lookup("no-such-peer"), "not in internal/peer/peers.txt")
	// sh is on every machine that runs these tests; a peer with a
	// failing probe names its packages.
	ps, err := parse("sh sh-pkg\nbroken broken-pkg false\n")
	require.NoError(t, err)
	assert.NoError(t, lookupIn(ps, "sh"))
	err = lookupIn(ps, "broken")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "broken-pkg")
}

// A missing peer outside CI skips the test and records one line in
// $AMTSIM_SKIPPED, which make test prints at the end.
func TestNeedSkipsAndRecords(t *testing.T) {
	if InCI() {
		t.Setenv("CI", "")
	}
	rec := filepath.Join(t.TempDir(), "skipped")
	t.Setenv("AMTSIM_SKIPPED", rec)
	ps, err := parse("ghost ghost-pkg false\n")
	require.NoError(t, err)
	ft := &fakeT{T: t}
	func() {
		defer func() { _ = recover() }()
		needIn(ft, ps, "ghost")
	}()
	assert.True(t, ft.skipped, "skipped")
	assert.False(t, ft.failed)
	b, err := os.ReadFile(rec)
	require.NoError(t, err)
	assert.Equal(t, 1, strings.Count(string(b), "\n"))
	assert.Contains(t, string(b), "ghost-pkg")
	assert.True(t, strings.HasPrefix(string(b), "internal/peer TestNeedSkipsAndRecords: "), "package and test name first: %s", b)

	t.Setenv("CI", "true")
	ft = &fakeT{T: t}
	func() {
		defer func() { _ = recover() }()
		needIn(ft, ps, "ghost")
	}()
	assert.True(t, ft.failed, "CI=true: a missing peer is a failure")
	assert.False(t, ft.skipped)
}

// fakeT records Skip and Fatal instead of ending the test; both panic to
// stop Need as runtime.Goexit would.
type fakeT struct {
	*testing.T
	skipped, failed bool
}

func (f *fakeT) Skip(args ...any)                  { f.skipped = true; panic("skip") }
func (f *fakeT) Fatalf(format string, args ...any) { f.failed = true; panic("fatal") }
func (f *fakeT) Helper()                           {}
