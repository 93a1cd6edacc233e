// Package floor measures the CPU a provisioning cannot do without, so that
// benchmarks can report what they spend as a multiple of it.
package floor

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/amtsim/amtsim/tlspsk"
)

// Floor is the CPU that one provisioning cannot do without, whatever the
// code around it: the two RSA-2048 private-key operations AMT 5 forces
// (the device decrypts the premaster secret of the verification handshake,
// the SCS's CA signs the device's certificate) and one TLS-PSK handshake
// (the session the SCS provisions over).
type Floor struct {
	RSADecrypt time.Duration // device
	RSASign    time.Duration // SCS
	PSKServer  time.Duration // device
	PSKClient  time.Duration // SCS
}

// Total is the floor of a provisioning, both sides.
func (f Floor) Total() time.Duration { return f.RSADecrypt + f.RSASign + f.PSKServer + f.PSKClient }

// Device is the device side's floor: its RSA decrypt and its side of the
// TLS-PSK handshake.
func (f Floor) Device() time.Duration { return f.RSADecrypt + f.PSKServer }

// Measure times n of each operation of the floor, each side on a
// goroutine locked to its OS thread and timed by that thread's CPU clock,
// so that the two sides of a handshake are measured apart in one process.
// The handshake is the one the reference SCS makes with an AMT 5 device
// (TLS 1.0, PSK-AES128-CBC-SHA) over an in-memory pipe.
func Measure(n int) (Floor, error) {
	var f Floor
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return f, fmt.Errorf("floor: key: %w", err)
	}
	ct, err := rsa.EncryptPKCS1v15(rand.Reader, &key.PublicKey, make([]byte, 48))
	if err != nil {
		return f, fmt.Errorf("floor: premaster: %w", err)
	}
	secret := make([]byte, 48)
	f.RSADecrypt, err = threadCPU(n, func() error { return rsa.DecryptPKCS1v15SessionKey(nil, key, ct, secret) })
	if err != nil {
		return f, fmt.Errorf("floor: RSA decrypt: %w", err)
	}
	digest := sha256.Sum256([]byte("tbsCertificate"))
	f.RSASign, err = threadCPU(n, func() error { _, err := rsa.SignPKCS1v15(nil, key, crypto.SHA256, digest[:]); return err })
	if err != nil {
		return f, fmt.Errorf("floor: RSA sign: %w", err)
	}
	f.PSKServer, f.PSKClient, err = pskHandshakes(n)
	return f, err
}

// pskHandshakes runs n TLS-PSK handshakes over net.Pipe and returns each
// side's thread CPU per handshake.
func pskHandshakes(n int) (server, client time.Duration, err error) {
	const pid, pps = "ABCD-EFGH", "1234-5678-9ABC-DEF0-1234-5678-9ABC-DEF0"
	psk := tlspsk.AMTKey(pps)
	scfg := tlspsk.AMT5Config(pid, func(string) ([]byte, error) { return psk, nil })
	ccfg := &tlspsk.Config{MinVersion: tlspsk.VersionTLS10, MaxVersion: tlspsk.VersionTLS10,
		CipherSuites: []uint16{tlspsk.TLS_PSK_WITH_AES_128_CBC_SHA}, Identity: pid, Key: psk, NoSecureRenegotiation: true}
	conns := make(chan net.Conn)
	type result struct {
		cpu time.Duration
		err error
	}
	done := make(chan result, 1)
	go func() {
		cpu, err := threadCPU(n, func() error {
			raw := <-conns
			defer raw.Close()
			return tlspsk.Server(raw, scfg).Handshake(context.Background())
		})
		done <- result{cpu, err}
	}()
	client, err = threadCPU(n, func() error {
		// The raw ends are closed, not the TLS conns: a close_notify each
		// way would deadlock on the unbuffered pipe.
		a, b := net.Pipe()
		conns <- b
		defer a.Close()
		return tlspsk.Client(a, ccfg).Handshake(context.Background())
	})
	if err != nil {
		return 0, 0, fmt.Errorf("floor: TLS-PSK client: %w", err)
	}
	r := <-done
	if r.err != nil {
		return 0, 0, fmt.Errorf("floor: TLS-PSK server: %w", r.err)
	}
	return r.cpu, client, nil
}

// threadCPU runs f n times on a goroutine locked to its thread and returns
// the thread's CPU per run.
func threadCPU(n int, f func() error) (time.Duration, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var t0, t1 unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t0); err != nil {
		return 0, err
	}
	for range n {
		if err := f(); err != nil {
			return 0, err
		}
	}
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &t1); err != nil {
		return 0, err
	}
	return time.Duration(t1.Nano()-t0.Nano()) / time.Duration(n), nil
}

// Report measures the floor and reports it beside a run's CPU per
// operation: floor-cpu-µs/op, cpu/floor, and device/device-floor from the
// device CPU per operation.
func Report(b *testing.B, op string, cpuPer, deviceCPUPer time.Duration) Floor {
	b.Helper()
	f, err := Measure(300)
	if err != nil {
		b.Fatal(err)
	}
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	b.ReportMetric(us(f.Total()), "floor-cpu-µs/"+op)
	b.ReportMetric(us(f.Device()), "device-floor-cpu-µs/"+op)
	b.ReportMetric(float64(cpuPer)/float64(f.Total()), "cpu/floor")
	b.ReportMetric(float64(deviceCPUPer)/float64(f.Device()), "device/device-floor")
	b.Logf("floor per %s: RSA decrypt %v, RSA sign %v, TLS-PSK server %v, client %v", op, f.RSADecrypt, f.RSASign, f.PSKServer, f.PSKClient)
	return f
}
