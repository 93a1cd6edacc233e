package tlspsk

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Intel's example pair (PROTOCOL.md §4).
const (
	testPID = "0000037M"
	testPPS = "NKLDG5DCRRNQE9YZZIJL7LFLVJED69XJ"
)

var versions = []struct {
	v    uint16
	name string
	flag string
}{{VersionTLS10, "TLS1.0", "-tls1"}, {VersionTLS11, "TLS1.1", "-tls1_1"}, {VersionTLS12, "TLS1.2", "-tls1_2"}}

// openSSLNames are the OpenSSL names of the suites OpenSSL 3 offers; 3DES
// and RC4 PSK suites are not built into Debian's OpenSSL 3.
var openSSLNames = map[uint16]string{
	TLS_PSK_WITH_AES_128_CBC_SHA:    "PSK-AES128-CBC-SHA",
	TLS_PSK_WITH_AES_256_CBC_SHA:    "PSK-AES256-CBC-SHA",
	TLS_PSK_WITH_AES_128_GCM_SHA256: "PSK-AES128-GCM-SHA256",
	TLS_PSK_WITH_AES_256_GCM_SHA384: "PSK-AES256-GCM-SHA384",
}

func serverConfig(v uint16, suite uint16) *Config {
	return &Config{MinVersion: v, MaxVersion: v, CipherSuites: []uint16{suite}, IdentityHint: testPID,
		GetKey: func(id string) ([]byte, error) {
			if id != testPID {
				return nil, errors.New("unknown")
			}
			return AMTKey(testPPS), nil
		}}
}

// pair runs our server on loopback and returns the client's result and the
// server's.
func pair(t *testing.T, scfg, ccfg *Config) (cerr, serr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		s := Server(c, scfg)
		defer s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Handshake(ctx); err != nil {
			done <- err
			return
		}
		line, err := bufio.NewReader(s).ReadString('\n')
		if err == nil {
			_, err = io.WriteString(s, "pong:"+line)
		}
		done <- err
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	c := Client(raw, ccfg)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cerr = c.Handshake(ctx)
	if cerr == nil {
		_, cerr = io.WriteString(c, strings.Repeat("x", 3000)+"\n")
		if cerr == nil {
			var line string
			line, cerr = bufio.NewReader(c).ReadString('\n')
			if cerr == nil && line != "pong:"+strings.Repeat("x", 3000)+"\n" {
				cerr = fmt.Errorf("echo %q", line)
			}
		}
	}
	return cerr, <-done
}

func TestOurClientAndServer(t *testing.T) {
	for _, v := range versions {
		for _, s := range suites {
			if s.tls12 && v.v < VersionTLS12 {
				continue
			}
			t.Run(v.name+"/"+s.name, func(t *testing.T) {
				cc := &Config{MinVersion: v.v, MaxVersion: v.v, CipherSuites: []uint16{s.id}, Identity: testPID, Key: AMTKey(testPPS)}
				cerr, serr := pair(t, serverConfig(v.v, s.id), cc)
				require.NoError(t, cerr)
				require.NoError(t, serr)
			})
		}
	}
}

func TestWrongKeyAndUnknownIdentity(t *testing.T) {
	cc := &Config{Identity: testPID, Key: []byte("not the PPS at all, not at all!!")}
	cerr, serr := pair(t, serverConfig(VersionTLS10, TLS_PSK_WITH_AES_128_CBC_SHA), cc)
	var ae *AlertError
	require.ErrorAs(t, serr, &ae)
	assert.True(t, ae.Sent)
	assert.Equal(t, AlertBadRecordMAC, ae.Description, "the client's Finished does not decrypt")
	require.ErrorAs(t, cerr, &ae)
	assert.False(t, ae.Sent)
	assert.Equal(t, AlertBadRecordMAC, ae.Description)

	cc = &Config{Identity: "NOBODY00", Key: AMTKey(testPPS)}
	cerr, serr = pair(t, serverConfig(VersionTLS12, TLS_PSK_WITH_AES_128_GCM_SHA256), cc)
	require.ErrorAs(t, serr, &ae)
	assert.Equal(t, AlertUnknownPSKIdentity, ae.Description)
	require.ErrorAs(t, cerr, &ae)
	assert.Equal(t, AlertUnknownPSKIdentity, ae.Description)
	assert.NotContains(t, serr.Error(), testPPS, "no secret in errors")
}

func TestPremasterSecretLayout(t *testing.T) {
	pms := premasterSecret(AMTKey(testPPS))
	require.Len(t, pms, 68)
	assert.Equal(t, "0020"+strings.Repeat("00", 32)+"0020"+hex.EncodeToString([]byte(testPPS)), hex.EncodeToString(pms))
}

func needOpenSSL(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Fatalf("openssl is not installed (bash .ci/run installs it): %v", err)
	}
}

// OpenSSL's s_client against our server, for every version × suite both
// offer.
func TestOpenSSLClientAgainstOurServer(t *testing.T) {
	needOpenSSL(t)
	for _, v := range versions {
		for id, name := range openSSLNames {
			if suiteByID(id).tls12 && v.v < VersionTLS12 {
				continue
			}
			t.Run(v.name+"/"+name, func(t *testing.T) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				require.NoError(t, err)
				defer ln.Close()
				done := make(chan error, 1)
				go func() {
					c, err := ln.Accept()
					if err != nil {
						done <- err
						return
					}
					s := Server(c, serverConfig(v.v, id))
					defer s.Close()
					_ = s.SetDeadline(time.Now().Add(10 * time.Second))
					line, err := bufio.NewReader(s).ReadString('\n')
					if err == nil {
						_, err = io.WriteString(s, "pong:"+line)
					}
					done <- err
				}()
				cmd := exec.Command("openssl", "s_client", "-connect", ln.Addr().String(), v.flag,
					"-cipher", name+"@SECLEVEL=0", "-psk", hex.EncodeToString(AMTKey(testPPS)), "-psk_identity", testPID, "-quiet")
				cmd.Stdin = strings.NewReader("ping\n")
				out, _ := runWithTimeout(t, cmd, 15*time.Second)
				require.NoError(t, <-done, "openssl said: %s", out)
				assert.Contains(t, out, "pong:ping")
			})
		}
	}
}

func runWithTimeout(t *testing.T, cmd *exec.Cmd, d time.Duration) (string, error) {
	t.Helper()
	var b strings.Builder
	cmd.Stdout, cmd.Stderr = &b, &b
	require.NoError(t, cmd.Start())
	timer := time.AfterFunc(d, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	return b.String(), err
}
