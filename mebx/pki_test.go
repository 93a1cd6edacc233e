package mebx

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The factory hashes are the thumbprints of real public roots: each one
// whose certificate Debian's ca-certificates still ship must match it.
func TestFactoryHashesMatchPublicRoots(t *testing.T) {
	files, _ := filepath.Glob("/etc/ssl/certs/*.pem")
	if len(files) == 0 {
		t.Skip("no /etc/ssl/certs/*.pem (Debian package ca-certificates) to check the factory hashes against")
	}
	have := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			continue
		}
		s1, s256 := sha1.Sum(blk.Bytes), sha256.Sum256(blk.Bytes)
		have[string(s1[:])], have[string(s256[:])] = true, true
	}
	found := 0
	for _, set := range [][]RootHash{AMT5RootHashes(), ModernRootHashes()} {
		for _, h := range set {
			if have[string(h.Hash)] {
				found++
			}
			assert.True(t, h.Default && h.Active, h.Name)
		}
	}
	// Go Daddy Class 2, Starfield Class 2 and Comodo AAA (AMT 5) and all
	// ten modern ones were in the store when the tables were written.
	assert.GreaterOrEqual(t, found, 13, "factory hashes that match a root in /etc/ssl/certs")
}

func TestParseRootHash(t *testing.T) {
	h, err := ParseRootHash("Lab Root=SHA-256:" + strings.Repeat("AB:", 31) + "AB")
	require.NoError(t, err)
	assert.Equal(t, "Lab Root", h.Name)
	assert.Equal(t, SHA256, h.Algorithm)
	assert.Len(t, h.Hash, 32)
	assert.True(t, h.Active)
	back, err := ParseRootHash(h.String())
	require.NoError(t, err)
	assert.Equal(t, h, back)

	for _, bad := range []string{
		"", "noequals", "=sha1:" + strings.Repeat("00", 20), "n=md5:" + strings.Repeat("00", 16),
		"n=sha1:" + strings.Repeat("00", 21), "n=sha1:zz", "n=sha1", strings.Repeat("x", 33) + "=sha1:" + strings.Repeat("00", 20),
		"tab\there=sha1:" + strings.Repeat("00", 20),
	} {
		_, err := ParseRootHash(bad)
		assert.ErrorIs(t, err, ErrInvalidSetting, "%q", bad)
	}
}

// The table as MEBx keeps it: at most three custom hashes, factory hashes
// switched off but never deleted or replaced, no hash twice, and every
// refused entry leaves the settings as they were.
func TestHashTableRules(t *testing.T) {
	s := Defaults()
	require.Len(t, s.PKI.Active(), 5)
	custom := func(i int) string {
		return "c" + string(rune('0'+i)) + "=sha1:" + strings.Repeat(string(rune('a'+i)), 40)
	}
	for i := range MaxCustomHashes {
		require.NoError(t, s.Set("pki.hash="+custom(i)))
	}
	before := s.PKI.Clone()
	assert.ErrorIs(t, s.Set("pki.hash="+custom(5)), ErrInvalidSetting, "a fourth custom hash")
	assert.ErrorIs(t, s.Set("pki.hash.delete=Go Daddy Class 2 CA"), ErrInvalidSetting)
	assert.ErrorIs(t, s.Set("pki.hash=Go Daddy Class 2 CA=sha1:"+strings.Repeat("0", 40)), ErrInvalidSetting)
	assert.ErrorIs(t, s.Set("pki.hash.active=nobody"), ErrInvalidSetting)
	assert.Equal(t, before, s.PKI, "refused entries change nothing")

	require.NoError(t, s.Set("pki.hash.delete=c1", "pki.hash.inactive=go daddy class 2 ca"))
	assert.Len(t, s.PKI.Hashes, 7)
	assert.Len(t, s.PKI.Active(), 6)
	assert.ErrorIs(t, s.Set("pki.hash=dup="+strings.TrimPrefix(custom(0), "c0=")), ErrInvalidSetting, "the same hash under another name")
	require.NoError(t, s.Set("pki.hash=c0=sha256:"+strings.Repeat("11", 32)), "a custom hash is replaced by name")
	assert.Equal(t, SHA256, s.PKI.Hashes[5].Algorithm)

	assert.True(t, s.RemoteConfigReady())
	require.NoError(t, s.Set("pki.remote_config=off"))
	assert.False(t, s.RemoteConfigReady())

	// On, but with no hash active: not ready; one active again: ready.
	require.NoError(t, s.Set("pki.remote_config=on"))
	for _, h := range s.PKI.Hashes {
		require.NoError(t, s.Set("pki.hash.inactive="+h.Name))
	}
	assert.False(t, s.RemoteConfigReady(), "no active hash")
	require.NoError(t, s.Set("pki.hash.active="+s.PKI.Hashes[len(s.PKI.Hashes)-1].Name))
	assert.True(t, s.RemoteConfigReady(), "the last hash active")
}

// A file's table is checked as entry would check it.
func TestHashTableFromFile(t *testing.T) {
	s := Defaults()
	s.PKI.Hashes[0].Hash = s.PKI.Hashes[0].Hash[:19]
	_, err := Decode(mustEncode(t, s))
	assert.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrInvalidSetting), "%v", err)

	s = Defaults()
	s.PKI.Hashes = append(s.PKI.Hashes, s.PKI.Hashes[1])
	_, err = Decode(mustEncode(t, s))
	assert.Error(t, err, "a name twice")

	s = Defaults()
	got, err := Decode(mustEncode(t, s))
	require.NoError(t, err)
	assert.Equal(t, s.PKI, got.PKI)
}

func mustEncode(t *testing.T, s Settings) []byte {
	t.Helper()
	b, err := Encode(s)
	require.NoError(t, err)
	return b
}

// FuzzParseRootHash holds the hash entry parser to its word: whatever it
// accepts is a hash of the size its algorithm gives, under a valid name,
// and prints back to an entry that parses to the same hash.
func FuzzParseRootHash(f *testing.F) {
	f.Add("Lab Root=sha256:" + strings.Repeat("ab", 32))
	f.Add("x=SHA1:" + strings.Repeat("01:", 19) + "01")
	f.Add("y=sha384:" + strings.Repeat("ff ", 48))
	f.Add("=sha1:")
	f.Add("n=sha1:0")
	f.Fuzz(func(t *testing.T, in string) {
		h, err := ParseRootHash(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidSetting) {
				t.Fatalf("error does not wrap ErrInvalidSetting: %v", err)
			}
			return
		}
		if h.Algorithm.Size() == 0 || len(h.Hash) != h.Algorithm.Size() || checkHashName(h.Name) != nil || !h.Active {
			t.Fatalf("accepted %q as %+v", in, h)
		}
		back, err := ParseRootHash(h.String())
		if err != nil || back.Name != h.Name || back.Algorithm != h.Algorithm || string(back.Hash) != string(h.Hash) {
			t.Fatalf("%q printed as %q, which reads back as %+v, %v", in, h.String(), back, err)
		}
	})
}
