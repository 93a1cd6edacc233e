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

	"github.com/amtsim/amtsim/internal/peer"
)

// Intel's example pair (docs/protocol.md §4).
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

// serveOnce runs our server for one connection on loopback: the handshake,
// then, with echo, one line answered "pong:<line>". done carries the
// server's result.
func serveOnce(t *testing.T, cfg *Config, echo bool) (addr string, done <-chan error) {
	t.Helper()
	return serveOnceWith(t, func(c net.Conn) (*Conn, error) { return Server(c, cfg), nil }, echo)
}

// serveOnceWith is serveOnce with the server made by wrap from the
// accepted connection.
func serveOnceWith(t *testing.T, wrap func(net.Conn) (*Conn, error), echo bool) (addr string, done <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	ch := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			ch <- err
			return
		}
		s, err := wrap(c)
		if err != nil {
			c.Close()
			ch <- err
			return
		}
		defer s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Handshake(ctx); err != nil || !echo {
			ch <- err
			return
		}
		_ = s.SetDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(s).ReadString('\n')
		if err == nil {
			_, err = io.WriteString(s, "pong:"+line)
		}
		ch <- err
	}()
	return ln.Addr().String(), ch
}

// pair runs our client against our server and returns the client's result
// and the server's.
func pair(t *testing.T, scfg, ccfg *Config) (cerr, serr error) {
	t.Helper()
	addr, done := serveOnce(t, scfg, true)
	return talk(t, addr, done, ccfg)
}

// talk runs our client against the echoing server at addr (serveOnce) and
// returns the client's result and the server's (done).
func talk(t *testing.T, addr string, done <-chan error, ccfg *Config) (cerr, serr error) {
	t.Helper()
	raw, err := net.Dial("tcp", addr)
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

// OpenSSL's s_client against our server, for every version × suite both
// offer.
func TestOpenSSLClientAgainstOurServer(t *testing.T) {
	peer.Need(t, "openssl")
	for _, v := range versions {
		for id, name := range openSSLNames {
			if suiteByID(id).tls12 && v.v < VersionTLS12 {
				continue
			}
			t.Run(v.name+"/"+name, func(t *testing.T) {
				addr, done := serveOnce(t, serverConfig(v.v, id), true)
				cmd := exec.Command("openssl", "s_client", "-connect", addr, v.flag,
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

// startOpenSSLServer runs openssl s_server -rev with the PSK on a free
// loopback port and returns its address once it accepts.
func startOpenSSLServer(t *testing.T, flag, cipher string, key []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close() // s_server binds it next; the window is tiny on loopback
	cmd := exec.Command("openssl", "s_server", "-accept", addr, "-naccept", "1", "-nocert", "-rev", flag,
		"-cipher", cipher+"@SECLEVEL=0", "-psk", hex.EncodeToString(key), "-psk_hint", testPID)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = cmd.Stdout
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ACCEPT") {
				close(ready)
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("openssl s_server did not start")
	}
	return addr
}

// Our client against OpenSSL's s_server, for every version × suite both
// offer; s_server -rev sends each line back reversed.
func TestOurClientAgainstOpenSSLServer(t *testing.T) {
	peer.Need(t, "openssl")
	for _, v := range versions {
		for id, name := range openSSLNames {
			if suiteByID(id).tls12 && v.v < VersionTLS12 {
				continue
			}
			t.Run(v.name+"/"+name, func(t *testing.T) {
				addr := startOpenSSLServer(t, v.flag, name, AMTKey(testPPS))
				raw, err := net.Dial("tcp", addr)
				require.NoError(t, err)
				c := Client(raw, &Config{MinVersion: v.v, MaxVersion: v.v, CipherSuites: []uint16{id}, Identity: testPID, Key: AMTKey(testPPS)})
				defer c.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				require.NoError(t, c.Handshake(ctx))
				st := c.ConnectionState()
				assert.Equal(t, v.v, st.Version)
				assert.Equal(t, id, st.CipherSuite)
				assert.Equal(t, testPID, st.Hint, "s_server's identity hint")
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				_, err = io.WriteString(c, "ping amtsim\n")
				require.NoError(t, err)
				line, err := bufio.NewReader(c).ReadString('\n')
				require.NoError(t, err)
				assert.Equal(t, "mistma gnip\n", line)
			})
		}
	}
}

// A wrong key fails on both sides with an alert, against OpenSSL too, and
// nothing hangs.
func TestWrongKeyAgainstOpenSSL(t *testing.T) {
	peer.Need(t, "openssl")
	addr := startOpenSSLServer(t, "-tls1", "PSK-AES128-CBC-SHA", []byte("some other key entirely, 32 byte"))
	raw, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c := Client(raw, &Config{MaxVersion: VersionTLS10, CipherSuites: []uint16{TLS_PSK_WITH_AES_128_CBC_SHA}, Identity: testPID, Key: AMTKey(testPPS)})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = c.Handshake(ctx)
	var ae *AlertError
	require.ErrorAs(t, err, &ae, "got %v", err)
	assert.False(t, ae.Sent)
	assert.Contains(t, []uint8{AlertBadRecordMAC, AlertDecryptError}, ae.Description, "OpenSSL's alert: %v", err)

	// And s_client with the wrong key against our server: we send
	// bad_record_mac, s_client reports it.
	srvAddr, done := serveOnce(t, serverConfig(VersionTLS10, TLS_PSK_WITH_AES_128_CBC_SHA), false)
	cmd := exec.Command("openssl", "s_client", "-connect", srvAddr, "-tls1",
		"-cipher", "PSK-AES128-CBC-SHA@SECLEVEL=0", "-psk", hex.EncodeToString([]byte("wrong")), "-psk_identity", testPID)
	cmd.Stdin = strings.NewReader("")
	out, cerr := runWithTimeout(t, cmd, 15*time.Second)
	assert.Error(t, cerr, "s_client fails")
	assert.Contains(t, out, "bad record mac")
	require.ErrorAs(t, <-done, &ae)
	assert.Equal(t, AlertBadRecordMAC, ae.Description)
}

// The README's OpenSSL 3 command against the device's own configuration
// (AMT5Config: TLS 1.0, PSK-AES128-CBC-SHA, no RFC 5746): it works with
// -legacy_server_connect, and OpenSSL 3 refuses the server without it.
func TestOpenSSL3AgainstAMT5Config(t *testing.T) {
	peer.Need(t, "openssl")
	cfg := AMT5Config(testPID, func(id string) ([]byte, error) {
		if id != testPID {
			return nil, errors.New("unknown")
		}
		return AMTKey(testPPS), nil
	})
	client := func(addr string, extra ...string) *exec.Cmd {
		args := append([]string{"s_client", "-connect", addr, "-tls1", "-cipher", "PSK-AES128-CBC-SHA@SECLEVEL=0",
			"-psk_identity", testPID, "-psk", hex.EncodeToString([]byte(testPPS)), "-quiet"}, extra...)
		cmd := exec.Command("openssl", args...)
		cmd.Stdin = strings.NewReader("ping\n")
		return cmd
	}
	addr, done := serveOnce(t, cfg, true)
	out, _ := runWithTimeout(t, client(addr, "-legacy_server_connect"), 15*time.Second)
	require.NoError(t, <-done, "openssl said: %s", out)
	assert.Contains(t, out, "pong:ping")

	addr, done = serveOnce(t, cfg, false)
	out, err := runWithTimeout(t, client(addr), 15*time.Second)
	assert.Error(t, err, "without -legacy_server_connect OpenSSL 3 refuses a server without RFC 5746: %s", out)
	assert.Contains(t, out, "unsafe legacy renegotiation")
	<-done
}
