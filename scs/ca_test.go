package scs

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The CA is made once and reloaded; what it issued before verifies after.
func TestCAPersistsAndIssues(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir)
	require.NoError(t, err)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	der, err := ca.Issue(&key.PublicKey, "optiplex-1", "amtsim.example")
	require.NoError(t, err)

	again, err := LoadOrCreateCA(dir)
	require.NoError(t, err)
	assert.Equal(t, ca.Cert.Raw, again.Cert.Raw)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	_, err = cert.Verify(x509.VerifyOptions{Roots: again.Pool(), DNSName: "optiplex-1.amtsim.example"})
	require.NoError(t, err)
	info, err := os.Stat(filepath.Join(dir, "ca.key"))
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())

	require.NoError(t, os.WriteFile(filepath.Join(dir, "ca.key"), []byte("junk"), 0o600))
	_, err = LoadOrCreateCA(dir)
	assert.Error(t, err, "a broken key is an error, never silently replaced")
}
