package mebx

import (
	"bytes"
	"errors"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const strong = "P@ssw0rd!"

func TestPasswordPolicy(t *testing.T) {
	for _, tc := range []struct {
		pw  string
		why string // substring of the error; "" = accepted
	}{
		{"admin123", "upper-case"},
		{"admin", "8 to 32"},
		{"Admin123", "special"},
		{"ADMIN12!", "lower-case"},
		{"Admin!!!", "digit"},
		{"Admin_12 ", "special"}, // _ and space do not count
		{"Adm:n12!", "not allowed"},
		{"Adm,n12!", "not allowed"},
		{`Adm"n12!`, "not allowed"},
		{strings.Repeat("Aa1!", 8) + "x", "8 to 32"},
		{strong, ""},
		{"Intel_123!", ""},
		{"Aa1!Aa1!", ""},
	} {
		err := CheckPassword(tc.pw)
		if tc.why == "" {
			assert.NoError(t, err, tc.pw)
			continue
		}
		require.Error(t, err, tc.pw)
		assert.ErrorIs(t, err, ErrWeakPassword)
		assert.Contains(t, err.Error(), tc.why, tc.pw)
	}
}

func TestPIDPPSNeedsChangedPassword(t *testing.T) {
	s := Defaults()
	err := s.SetPIDPPS("0000-037M", "NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ")
	require.ErrorIs(t, err, ErrFactoryPassword)
	assert.Equal(t, StatePre, s.State)

	require.NoError(t, s.SetPassword(strong))
	require.ErrorIs(t, s.SetPIDPPS("0000-037N", "NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ"), ErrPIDFormat)
	require.ErrorIs(t, s.SetPIDPPS("0000-037M", "NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XK"), ErrPPSFormat)
	assert.Equal(t, StatePre, s.State, "a refused entry changes nothing")

	require.NoError(t, s.SetPIDPPS("0000-037M", "nkld-g5dc-rrnq-e9yz-zijl-7lfl-vjed-69xj"))
	assert.Equal(t, "0000037M", s.PID)
	assert.Equal(t, "NKLDG5DCRRNQE9YZZIJL7LFLVJED69XJ", s.PPS)
	assert.Equal(t, StateIn, s.State, "PID/PPS entry moves factory → setup")
}

func TestSetIsAtomic(t *testing.T) {
	s := Defaults()
	err := s.Set("hostname=pc1", "password=admin123")
	require.ErrorIs(t, err, ErrWeakPassword)
	assert.Equal(t, Defaults(), s, "a refused assignment leaves every setting as it was")

	require.NoError(t, s.Set("password="+strong, "hostname=pc1", "domain=example.test", "dhcp=off",
		"ip=10.0.0.5", "netmask=255.255.255.0", "gateway=10.0.0.1", "dns1=10.0.0.2",
		"scs.address=10.0.0.9", "scs.port=9972", "pid=0000-037M", "pps=NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ"))
	assert.False(t, s.DHCP)
	assert.Equal(t, netip.MustParseAddr("10.0.0.9"), s.SCSAddress)
	assert.Equal(t, uint16(9972), s.SCSPort)
	p, err := s.Prefix()
	require.NoError(t, err)
	assert.Equal(t, "10.0.0.5/24", p.String())

	assert.ErrorIs(t, s.Set("netmask=255.0.255.0"), ErrInvalidSetting)
	assert.ErrorIs(t, s.Set("bogus=1"), ErrInvalidSetting)
	assert.ErrorIs(t, s.Set("pid=0000-037M"), ErrInvalidSetting, "pid without pps")
	assert.ErrorIs(t, s.Set("hostname=bad name"), ErrInvalidSetting)
	assert.ErrorIs(t, s.Set("scs.port=0"), ErrInvalidSetting)
	d := Defaults()
	assert.ErrorIs(t, d.Set("dhcp=off"), ErrInvalidSetting, "static needs an address")
}

func TestFileStoreRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mebx.json")
	st := NewFileStore(path)
	_, err := st.Load()
	require.ErrorIs(t, err, ErrNoSettings)

	s := Defaults()
	require.NoError(t, s.Set("password="+strong, "pid=0000-037M", "pps=NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ", "hostname=pc1"))
	require.NoError(t, st.Save(s))
	got, err := st.Load()
	require.NoError(t, err)
	assert.Equal(t, s, got)

	fi, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "the file holds secrets")
}

func TestTruncatedFileIsClearError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mebx.json")
	st := NewFileStore(path)
	require.NoError(t, st.Save(Defaults()))
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, b[:len(b)/2], 0o600))
	_, err = st.Load()
	require.ErrorIs(t, err, ErrCorrupt)
	assert.Contains(t, err.Error(), "truncated")
	assert.Contains(t, err.Error(), path)

	// Hand-broken: a weak password typed into the file is refused on load.
	require.NoError(t, os.WriteFile(path, []byte(strings.Replace(string(b), `"admin"`, `"admin123"`, 1)), 0o600))
	_, err = st.Load()
	require.ErrorIs(t, err, ErrCorrupt)
	assert.ErrorIs(t, err, ErrWeakPassword)
}

// TestCrashBetweenWriteAndRename kills a process after it has written and
// synced the new file but before the rename: the old file must stay whole.
func TestCrashBetweenWriteAndRename(t *testing.T) {
	if path := os.Getenv("AMTSIM_MEBX_CRASH_STORE"); path != "" {
		st := NewFileStore(path)
		st.beforeRename = func() error { os.Exit(3); return nil }
		s := Defaults()
		if err := s.Set("password="+strong, "hostname=newname"); err != nil {
			os.Exit(2)
		}
		_ = st.Save(s)
		os.Exit(0) // not reached
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "mebx.json")
	st := NewFileStore(path)
	old := Defaults()
	old.HostName = "oldname"
	require.NoError(t, st.Save(old))

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashBetweenWriteAndRename$")
	cmd.Env = append(os.Environ(), "AMTSIM_MEBX_CRASH_STORE="+path)
	err := cmd.Run()
	var ee *exec.ExitError
	require.True(t, errors.As(err, &ee), "helper must die: %v", err)
	require.Equal(t, 3, ee.ExitCode())

	entries, _ := os.ReadDir(dir)
	require.Len(t, entries, 2, "the crashed temp file is beside the store, never in its place")
	got, err := st.Load()
	require.NoError(t, err)
	assert.Equal(t, "oldname", got.HostName, "the old file is intact")
	entries, _ = os.ReadDir(dir)
	assert.Len(t, entries, 1, "the next load removed the crashed temp file and the secrets in it")

	// And the next save still works.
	require.NoError(t, st.Save(Defaults()))
	got, err = st.Load()
	require.NoError(t, err)
	assert.Equal(t, Defaults(), got)
}

func TestSaveFailureBeforeRenameKeepsOld(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mebx.json")
	st := NewFileStore(path)
	require.NoError(t, st.Save(Defaults()))
	st.beforeRename = func() error { return errors.New("disk pulled") }
	s := Defaults()
	s.HostName = "never"
	require.ErrorContains(t, st.Save(s), "disk pulled")
	got, err := st.Load()
	require.NoError(t, err)
	assert.Equal(t, Defaults(), got)
	entries, _ := os.ReadDir(dir)
	assert.Len(t, entries, 1, "a failed save cleans its temp file")
}

func TestMemStore(t *testing.T) {
	m := NewMemStore()
	_, err := m.Load()
	require.ErrorIs(t, err, ErrNoSettings)
	s := Defaults()
	require.NoError(t, m.Save(s))
	s.HostName = "changed-after-save"
	got, err := m.Load()
	require.NoError(t, err)
	assert.Empty(t, got.HostName, "the store keeps its own copy")
	bad := Defaults()
	bad.Mode = 7
	assert.ErrorIs(t, m.Save(bad), ErrInvalidSetting)
}

func FuzzDecode(f *testing.F) {
	d, _ := Encode(Defaults())
	f.Add(d)
	s := Defaults()
	_ = s.Set("password="+strong, "dhcp=off", "ip=10.1.2.3", "netmask=255.255.0.0", "pid=0000-037M", "pps=NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ")
	p, _ := Encode(s)
	f.Add(p)
	f.Add(p[:len(p)/3])
	f.Add([]byte(`{"format":"amtsim-mebx/1","settings":null}`))
	f.Add([]byte(`{"format":"amtsim-mebx/1","settings":{"provisioning_mode":1,"scs_port":1,"dhcp":true,"ip":"::1"}}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error does not wrap ErrCorrupt: %v", err)
			}
			return
		}
		again, err := Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := Decode(again)
		if err != nil {
			t.Fatalf("re-decoding our own encoding: %v", err)
		}
		// Compared as encodings: an empty list and no list are the same
		// settings.
		if third, err := Encode(s2); err != nil || !bytes.Equal(third, again) {
			t.Fatalf("round trip changed settings:\n%s\n%s", again, third)
		}
	})
}
