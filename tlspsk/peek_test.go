package tlspsk

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// firstFlight is what a client writes before it waits for the server.
func firstFlight(t *testing.T, start func(c net.Conn)) []byte {
	t.Helper()
	a, b := net.Pipe()
	go start(a)
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16<<10)
	n, err := b.Read(buf)
	require.NoError(t, err)
	a.Close()
	b.Close()
	return buf[:n]
}

// PeekSuites tells a PSK ClientHello from crypto/tls's certificate one and
// leaves every byte for the handshake that follows.
func TestPeekSuites(t *testing.T) {
	psk := firstFlight(t, func(c net.Conn) {
		_ = Client(c, &Config{MinVersion: VersionTLS10, MaxVersion: VersionTLS10, Identity: "0000037M", Key: AMTKey("NKLDG5DCRRNQE9YZZIJL7LFLVJED69XJ")}).Handshake(t.Context())
	})
	x509 := firstFlight(t, func(c net.Conn) {
		_ = tls.Client(c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS10}).Handshake()
	})
	for name, tc := range map[string]struct {
		b   []byte
		psk bool
	}{"tlspsk": {psk, true}, "crypto/tls": {x509, false}} {
		r := bufio.NewReaderSize(bytes.NewReader(tc.b), 16<<10)
		suites, err := PeekSuites(r)
		require.NoError(t, err, name)
		assert.Equal(t, tc.psk, slices.ContainsFunc(suites, IsPSKSuite), name)
		rest, _ := io.ReadAll(r)
		assert.Equal(t, tc.b, rest, "%s: nothing consumed", name)
	}
	for _, bad := range [][]byte{[]byte("GET / HTTP/1.1\r\n\r\n"), {22, 3, 1, 0, 0}, {22, 3, 1, 0, 4, 2, 0, 0, 0}} {
		_, err := PeekSuites(bufio.NewReader(bytes.NewReader(bad)))
		assert.Error(t, err, "% x", bad)
	}
}

// FuzzParseSuites: whatever the full ClientHello parser accepts, the peek
// reads the same suites from.
func FuzzParseSuites(f *testing.F) {
	m := clientHelloMsg{version: VersionTLS10, random: make([]byte, 32), cipherSuites: []uint16{TLS_PSK_WITH_AES_128_CBC_SHA, 0x002f}, compression: []uint8{0}}
	f.Add(m.marshal())
	m.sessionID = make([]byte, 32)
	m.secureRenegotiation = true
	f.Add(m.marshal())
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := parseSuites(b)
		if len(b) < 4 {
			return
		}
		var full clientHelloMsg
		if b[0] != typeClientHello || !full.unmarshal(b[4:]) {
			return
		}
		if err != nil || !slices.Equal(got, full.cipherSuites) {
			t.Fatalf("peek read %v, %v; the full parser %v", got, err, full.cipherSuites)
		}
	})
}

// A server that peeked the ClientHello to choose its handshake goes on
// through the reader that holds it (ServerReader): the handshake reads the
// peeked bytes, then the records after them.
func TestServerReaderAfterPeek(t *testing.T) {
	addr, done := serveOnceWith(t, func(c net.Conn) (*Conn, error) {
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		suites, err := PeekSuites(br)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(suites, IsPSKSuite) {
			return nil, fmt.Errorf("no PSK suite in %v", suites)
		}
		return ServerReader(c, br, serverConfig(VersionTLS10, TLS_PSK_WITH_AES_128_CBC_SHA)), nil
	}, true)
	cerr, serr := talk(t, addr, done, &Config{MinVersion: VersionTLS10, MaxVersion: VersionTLS10, Identity: testPID, Key: AMTKey(testPPS)})
	require.NoError(t, cerr)
	require.NoError(t, serr)
}
