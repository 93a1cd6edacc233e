package scs

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The verification handshake offers what AMT's certificate TLS has: TLS
// 1.0–1.2 with RSA key exchange, and no TLS 1.3 (whose key shares would be
// made for nothing).
func TestOperationalClientHello(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	hellos := make(chan *tls.ClientHelloInfo, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = tls.Server(c, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			hellos <- h
			return nil, errors.New("seen enough")
		}}).Handshake()
	}()

	target := Target{Addr: "127.0.0.1", Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, ln.Addr().String())
	}}
	sess := OpenOperational(target, nil, "optiplex-1.amtsim.example", "admin", "Admin-Pass1!")
	defer sess.Close()
	_, err = sess.WSMAN.HTTP.Get("https://127.0.0.1:16993/wsman")
	require.Error(t, err, "the server refuses after the ClientHello")

	h := <-hellos
	assert.Equal(t, []uint16{tls.VersionTLS12, tls.VersionTLS11, tls.VersionTLS10}, h.SupportedVersions)
	assert.ElementsMatch(t, []uint16{tls.TLS_RSA_WITH_AES_128_CBC_SHA, tls.TLS_RSA_WITH_AES_256_CBC_SHA},
		slices.DeleteFunc(slices.Clone(h.CipherSuites), func(s uint16) bool { return s == 0x00ff }))
	assert.Equal(t, "optiplex-1.amtsim.example", h.ServerName)
}
