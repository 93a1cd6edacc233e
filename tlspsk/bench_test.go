package tlspsk

import (
	"bufio"
	"context"
	"encoding/hex"
	"io"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// BenchmarkServerHandshake measures full PSK handshakes per second: our
// client against our server, and the same client against openssl s_server
// in the same run, for the AMT 5 suite (TLS 1.0 PSK-AES128-CBC-SHA) and for
// TLS 1.2 AES-128-GCM. Both servers get one connection at a time; the
// ratio ours/openssl is the figure to watch (target ≥ 0.8).
func BenchmarkServerHandshake(b *testing.B) {
	for _, c := range []struct {
		name    string
		version uint16
		flag    string
		suite   uint16
		openssl string
	}{
		{"TLS1.0-PSK-AES128-CBC-SHA", VersionTLS10, "-tls1", TLS_PSK_WITH_AES_128_CBC_SHA, "PSK-AES128-CBC-SHA"},
		{"TLS1.2-PSK-AES128-GCM-SHA256", VersionTLS12, "-tls1_2", TLS_PSK_WITH_AES_128_GCM_SHA256, "PSK-AES128-GCM-SHA256"},
	} {
		client := &Config{MinVersion: c.version, MaxVersion: c.version, CipherSuites: []uint16{c.suite}, Identity: testPID, Key: AMTKey(testPPS)}
		b.Run(c.name+"/amtsim", func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			cfg := serverConfig(c.version, c.suite)
			go func() {
				for {
					raw, err := ln.Accept()
					if err != nil {
						return
					}
					go func() {
						s := Server(raw, cfg)
						_ = s.Handshake(context.Background())
						_ = s.Close()
					}()
				}
			}()
			handshakes(b, ln.Addr().String(), client)
		})
		b.Run(c.name+"/openssl", func(b *testing.B) {
			if _, err := exec.LookPath("openssl"); err != nil {
				b.Skip("openssl not installed")
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			addr := ln.Addr().String()
			ln.Close()
			cmd := exec.Command("openssl", "s_server", "-accept", addr, "-nocert", "-quiet", c.flag,
				"-cipher", c.openssl+"@SECLEVEL=0", "-psk", hex.EncodeToString(AMTKey(testPPS)), "-psk_hint", testPID)
			cmd.Stdin = strings.NewReader("")
			out, _ := cmd.StdoutPipe()
			cmd.Stderr = cmd.Stdout
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			go func() { _, _ = io.Copy(io.Discard, bufio.NewReader(out)) }()
			deadline := time.Now().Add(10 * time.Second)
			for {
				c, err := net.Dial("tcp", addr)
				if err == nil {
					c.Close()
					break
				}
				if time.Now().After(deadline) {
					b.Fatal("openssl s_server did not start")
				}
				time.Sleep(20 * time.Millisecond)
			}
			handshakes(b, addr, client)
		})
	}
}

func handshakes(b *testing.B, addr string, cfg *Config) {
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c := Client(raw, cfg)
		if err := c.Handshake(context.Background()); err != nil {
			b.Fatal(err)
		}
		_ = c.Close()
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "handshakes/s")
}
