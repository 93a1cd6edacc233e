package tlspsk

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amtsim/amtsim/internal/measure"
	"github.com/amtsim/amtsim/internal/peer"
)

// benchServerEnv makes the test binary a bare PSK server (see TestMain), so
// that our server, like openssl s_server, runs in a process of its own
// whose CPU time can be read apart from the client's.
const benchServerEnv = "AMTSIM_TLSPSK_BENCH_SERVER"

func TestMain(m *testing.M) {
	if spec := os.Getenv(benchServerEnv); spec != "" {
		os.Exit(benchServer(spec))
	}
	os.Exit(m.Run())
}

// benchServer serves "version,suite" handshakes on loopback until stdin
// closes: each connection handshakes, then closes.
func benchServer(spec string) int {
	v, s, ok := strings.Cut(spec, ",")
	version, err1 := strconv.ParseUint(v, 0, 16)
	suite, err2 := strconv.ParseUint(s, 0, 16)
	if !ok || err1 != nil || err2 != nil {
		fmt.Fprintf(os.Stderr, "%s=%q: want version,suite\n", benchServerEnv, spec)
		return 2
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg := serverConfig(uint16(version), uint16(suite))
	go func() {
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				c := Server(raw, cfg)
				_ = c.Handshake(context.Background())
				_ = c.Close()
			}()
		}
	}()
	fmt.Printf("ACCEPT %s\n", ln.Addr())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// BenchmarkServerHandshake measures the server side of full PSK handshakes:
// our server and openssl s_server, each in its own process, driven by the
// same client (ours, in the benchmark process) in the same run, for the AMT
// 5 suite (TLS 1.0 PSK-AES128-CBC-SHA) and for TLS 1.2 AES-128-GCM. The
// figures are each server process's CPU per handshake and handshakes per
// second per core (handshakes / server CPU seconds), and their ratio
// amtsim/openssl-per-core (target ≥ 1.0: ours costs no more CPU than
// openssl's). The two servers take turns in rounds of a quarter of b.N so
// that a change in the machine's speed meets both. /proc counts CPU in
// 10 ms ticks, so run with -benchtime of a few seconds for a steady figure.
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
		b.Run(c.name, func(b *testing.B) {
			peer.Need(b, "openssl")
			self, err := os.Executable()
			if err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(self)
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%#x,%#x", benchServerEnv, c.version, c.suite))
			ours, oursAddr := startBenchServer(b, cmd, func(line string) (string, bool) {
				return strings.CutPrefix(line, "ACCEPT ")
			})
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			sslAddr := ln.Addr().String()
			ln.Close()
			cmd = exec.Command("openssl", "s_server", "-accept", sslAddr, "-nocert", "-quiet", c.flag,
				"-cipher", c.openssl+"@SECLEVEL=0", "-psk", hex.EncodeToString(AMTKey(testPPS)), "-psk_hint", testPID)
			// -quiet hides s_server's "ACCEPT"; its port answering is the sign.
			ssl, _ := startBenchServer(b, cmd, nil)
			waitListening(b, sslAddr)

			b.ReportAllocs()
			b.ResetTimer()
			var oursCPU, sslCPU time.Duration
			var oursWall, sslWall time.Duration
			for done := 0; done < b.N; {
				k := max(1, min(b.N/4, b.N-done))
				cpu, wall := handshakes(b, k, ours, oursAddr, client)
				oursCPU, oursWall = oursCPU+cpu, oursWall+wall
				cpu, wall = handshakes(b, k, ssl, sslAddr, client)
				sslCPU, sslWall = sslCPU+cpu, sslWall+wall
				done += k
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/oursWall.Seconds(), "amtsim-handshakes/s")
			b.ReportMetric(float64(b.N)/sslWall.Seconds(), "openssl-handshakes/s")
			if oursCPU > 0 && sslCPU > 0 {
				b.ReportMetric(float64(oursCPU.Microseconds())/float64(b.N), "amtsim-server-cpu-µs/hs")
				b.ReportMetric(float64(sslCPU.Microseconds())/float64(b.N), "openssl-server-cpu-µs/hs")
				b.ReportMetric(float64(b.N)/oursCPU.Seconds(), "amtsim-server-hs/s/core")
				b.ReportMetric(float64(b.N)/sslCPU.Seconds(), "openssl-server-hs/s/core")
				b.ReportMetric(float64(sslCPU)/float64(oursCPU), "amtsim/openssl-per-core")
			}
		})
	}
}

// startBenchServer starts cmd, waits for the line ready accepts (when ready
// is not nil) and returns the process id and the address ready gave. The
// server stops when the benchmark ends.
func startBenchServer(b *testing.B, cmd *exec.Cmd, ready func(line string) (string, bool)) (int, string) {
	b.Helper()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = stdin.Close(); _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if ready == nil {
				continue
			}
			if addr, ok := ready(sc.Text()); ok {
				addrc <- addr
				break
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	if ready == nil {
		return cmd.Process.Pid, ""
	}
	select {
	case addr := <-addrc:
		return cmd.Process.Pid, addr
	case <-time.After(10 * time.Second):
		b.Fatalf("%s did not start", cmd.Path)
		return 0, ""
	}
}

func waitListening(b *testing.B, addr string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("nothing listens on %s: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// handshakes runs n handshakes, one at a time, against the server process
// pid at addr, and returns the server's CPU and the wall time they took.
func handshakes(b *testing.B, n, pid int, addr string, cfg *Config) (cpu, wall time.Duration) {
	cpu0, err := measure.ProcessCPUTime(pid)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for range n {
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
	wall = time.Since(start)
	cpu1, err := measure.ProcessCPUTime(pid)
	if err != nil {
		b.Fatal(err)
	}
	return cpu1 - cpu0, wall
}
