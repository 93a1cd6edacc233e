package tlspsk

import (
	"bufio"
	"context"
	"encoding/hex"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/internal/syncbuf"

	"github.com/amtsim/amtsim/internal/peer"
)

// tamperProxy relays one TCP connection to target and flips one bit in the
// first application-data record that travels in the chosen direction
// (toServer: client → server). It works on the TLS record framing only, as
// an attacker on the path would.
func tamperProxy(t *testing.T, target string, toServer bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		down, err := ln.Accept()
		if err != nil {
			return
		}
		defer down.Close()
		up, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer up.Close()
		var wg sync.WaitGroup
		relay := func(dst, src net.Conn, tamper bool) {
			defer wg.Done()
			defer func() {
				if tc, ok := dst.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
			}()
			br := bufio.NewReader(src)
			done := !tamper
			for {
				var hdr [recordHeaderLen]byte
				if _, err := io.ReadFull(br, hdr[:]); err != nil {
					return
				}
				body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
				if _, err := io.ReadFull(br, body); err != nil {
					return
				}
				if !done && hdr[0] == recordApplicationData && len(body) > 0 {
					body[len(body)/2] ^= 0x01
					done = true
				}
				if _, err := dst.Write(append(hdr[:], body...)); err != nil {
					return
				}
			}
		}
		wg.Add(2)
		go relay(up, down, toServer)
		go relay(down, up, !toServer)
		wg.Wait()
	}()
	return ln.Addr().String()
}

// A record altered on the wire fails as bad_record_mac wherever it lands:
// at our server (s_client reports our alert), at our client, and at OpenSSL
// (we report its alert). Nobody hangs.
func TestTamperedRecordOnTheWire(t *testing.T) {
	peer.Need(t, "openssl")
	psk := hex.EncodeToString(AMTKey(testPPS))

	t.Run("s_client→ours", func(t *testing.T) {
		addr, done := serveOnce(t, serverConfig(VersionTLS10, TLS_PSK_WITH_AES_128_CBC_SHA), true)
		cmd := exec.Command("openssl", "s_client", "-connect", tamperProxy(t, addr, true), "-tls1",
			"-cipher", "PSK-AES128-CBC-SHA@SECLEVEL=0", "-psk", psk, "-psk_identity", testPID, "-quiet")
		cmd.Stdin = strings.NewReader("ping\n")
		out, _ := runWithTimeout(t, cmd, 15*time.Second)
		var ae *AlertError
		require.ErrorAs(t, <-done, &ae)
		assert.True(t, ae.Sent)
		assert.Equal(t, AlertBadRecordMAC, ae.Description)
		assert.Contains(t, out, "bad record mac", "s_client reports our alert")
		assert.NotContains(t, out, "pong")
	})

	for _, c := range []struct {
		name     string
		toServer bool
		sent     bool
	}{
		{"ours→s_server", true, false}, // OpenSSL finds it and tells us
		{"s_server→ours", false, true}, // we find it and tell OpenSSL
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := startOpenSSLServer(t, "-tls1_2", "PSK-AES128-GCM-SHA256", AMTKey(testPPS))
			raw, err := net.Dial("tcp", tamperProxy(t, addr, c.toServer))
			require.NoError(t, err)
			cl := Client(raw, &Config{MinVersion: VersionTLS12, CipherSuites: []uint16{TLS_PSK_WITH_AES_128_GCM_SHA256}, Identity: testPID, Key: AMTKey(testPPS)})
			defer cl.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			require.NoError(t, cl.Handshake(ctx))
			_ = cl.SetDeadline(time.Now().Add(10 * time.Second))
			_, err = io.WriteString(cl, "ping amtsim\n")
			require.NoError(t, err)
			_, err = bufio.NewReader(cl).ReadString('\n')
			var ae *AlertError
			require.ErrorAs(t, err, &ae, "got %v", err)
			assert.Equal(t, c.sent, ae.Sent)
			assert.Equal(t, AlertBadRecordMAC, ae.Description)
		})
	}
}

// OpenSSL's s_client asks to renegotiate ("R"): our server answers with a
// no_renegotiation warning and keeps the keys it has. OpenSSL 3 gives up
// the connection with handshake_failure when refused, which is its choice;
// what matters is that no second handshake happened.
func TestRenegotiationRefusedAgainstOpenSSL(t *testing.T) {
	peer.Need(t, "openssl")
	cfg := serverConfig(VersionTLS10, TLS_PSK_WITH_AES_128_CBC_SHA)
	handshakes := 0
	inner := cfg.GetKey
	cfg.GetKey = func(id string) ([]byte, error) { handshakes++; return inner(id) }
	addr, done := serveOnce(t, cfg, true)
	cmd := exec.Command("openssl", "s_client", "-connect", addr, "-tls1", "-msg",
		"-cipher", "PSK-AES128-CBC-SHA@SECLEVEL=0", "-psk", hex.EncodeToString(AMTKey(testPPS)), "-psk_identity", testPID)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "Verify return code") }, 10*time.Second, 20*time.Millisecond,
		"s_client finished its handshake: %s", out.String())
	_, _ = io.WriteString(stdin, "R\n")
	var serr error
	select {
	case serr = <-done:
	case <-time.After(10 * time.Second):
		t.Fatalf("server still waiting after the renegotiation attempt; s_client: %s", out.String())
	}
	_ = stdin.Close()
	assert.Contains(t, out.String(), "RENEGOTIATING")
	// s_client prints what it read a moment after our server has finished.
	alert := regexp.MustCompile(`<<< TLS 1.0, Alert \[length 0002\], warning no_renegotiation\n\s+01 64`)
	assert.Eventually(t, func() bool { return alert.MatchString(out.String()) }, 10*time.Second, 20*time.Millisecond,
		"s_client received our warning(1) no_renegotiation(100): %s", out.String())
	var ae *AlertError
	if assert.ErrorAs(t, serr, &ae, "got %v", serr) {
		assert.False(t, ae.Sent)
		assert.Equal(t, AlertHandshakeFailure, ae.Description, "OpenSSL's answer to the refusal")
	}
	assert.Equal(t, 1, handshakes, "only the first handshake looked up a key")
}

// The other way: s_server sends a HelloRequest ("r" on its console); our
// client refuses with no_renegotiation and does not start a handshake.
func TestHelloRequestRefusedAgainstOpenSSL(t *testing.T) {
	peer.Need(t, "openssl")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command("openssl", "s_server", "-accept", addr, "-naccept", "1", "-nocert", "-msg", "-tls1_2",
		"-cipher", "PSK-AES128-GCM-SHA256@SECLEVEL=0", "-psk", hex.EncodeToString(AMTKey(testPPS)), "-psk_hint", testPID)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	var out syncbuf.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "ACCEPT") }, 10*time.Second, 20*time.Millisecond)

	raw, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	cl := Client(raw, &Config{MinVersion: VersionTLS12, CipherSuites: []uint16{TLS_PSK_WITH_AES_128_GCM_SHA256}, Identity: testPID, Key: AMTKey(testPPS)})
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	require.NoError(t, cl.Handshake(ctx))
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "CIPHER is") }, 10*time.Second, 20*time.Millisecond)
	_, _ = io.WriteString(stdin, "r\n")
	_ = cl.SetDeadline(time.Now().Add(10 * time.Second))
	_, err = cl.Read(make([]byte, 16))
	var ae *AlertError
	require.ErrorAs(t, err, &ae, "got %v; s_server: %s", err, out.String())
	assert.False(t, ae.Sent)
	assert.Equal(t, AlertHandshakeFailure, ae.Description, "OpenSSL's answer to the refusal")
	alert := regexp.MustCompile(`<<< TLS 1.2, Alert \[length 0002\], warning no_renegotiation\n\s+01 64`)
	assert.Eventually(t, func() bool { return alert.MatchString(out.String()) }, 10*time.Second, 20*time.Millisecond,
		"s_server received our warning no_renegotiation: %s", out.String())
	assert.Equal(t, 1, strings.Count(out.String(), ", ClientHello"), "only the first handshake's ClientHello")
}
