package firmware

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/measure"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/scs"
	"github.com/amtsim/amtsim/wsman"
)

// BenchmarkProvisioning provisions a fleet on the embedded LAN with the
// scs client (TLS-PSK on 16993, Digest, the whole transaction with AddKey
// and a CA-signed certificate, commit), 16 sessions at a time, and splits
// the CPU it took by who spent it, from a CPU profile whose samples carry
// labels: the device's connection goroutines ("device": TLS-PSK server,
// HTTP, Digest, WS-MAN, the model, the commit), the SCS client's ("scs":
// TLS-PSK client, envelopes, certificate signing), and the rest ("other":
// the shared gVisor netstack, the LAN switch, the Go runtime). Per
// provisioning it reports device-cpu-µs, scs-cpu-µs, other-cpu-µs, their
// total, and provisionings/s (wall).
func BenchmarkProvisioning(b *testing.B) {
	const n = 500
	for range b.N {
		provisionFleet(b, n)
	}
}

func provisionFleet(b *testing.B, n int) {
	bn := benchLAN(b)
	netw, srv, stacks := bn.netw, bn.srv, bn.stacks
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	devs, ids := bootSetupFleet(ctx, b, bn, 4, n)

	// The SCS's material: a CA, and one device key (AddKey) so that key
	// generation, which the SCS may do ahead of time, stays out of the
	// figure.
	caKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench CA"}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	devKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	var serial atomic.Int64
	certify := func(pub *rsa.PublicKey, host, domain string) ([]byte, error) {
		t := &x509.Certificate{SerialNumber: big.NewInt(serial.Add(1) + 1), Subject: pkix.Name{CommonName: host + "." + domain},
			DNSNames: []string{host + "." + domain}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
		return x509.CreateCertificate(rand.Reader, t, ca, pub, caKey)
	}
	dial := srv.DialContext

	var prof bytes.Buffer
	if err := pprof.StartCPUProfile(&prof); err != nil {
		b.Skipf("CPU profile unavailable (is -cpuprofile set?): %v", err)
	}
	tcp0 := stacks.TCPCounts().Add(netw.Stacks().TCPCounts())
	cpu0 := measure.CPUTime()
	start := time.Now()
	jobs := make(chan int)
	var wg sync.WaitGroup
	var failed atomic.Int64
	var firstErr atomic.Value
	for range 16 {
		wg.Add(1)
		go pprof.Do(context.Background(), pprof.Labels("amtsim", "scs"), func(ctx context.Context) {
			defer wg.Done()
			for i := range jobs {
				id := ids[i]
				next, _ := identity.Of(5, 0, i)
				p := scs.Profile{NewPID: next.PID, NewPPS: next.PPS, NewMEBxPassword: "Bench-Pass2!", AdminUser: "admin", AdminPassword: "Admin-Pass3!",
					Users:    []scs.User{{Name: "operator", Password: "Oper-Pass4!", Access: 2, Realms: []uint32{3}}},
					HostName: id.HostName, DomainName: "amtsim.example", Key: devKey, Certify: certify}
				t := scs.Target{Addr: devs[i].Addr().String(), Dial: dial, PID: id.PID, PPS: id.PPS, Password: "Bench-Pass1!"}
				if _, err := scs.Provision(ctx, t, p, nil); err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	wall := time.Since(start)
	cpu := measure.CPUTime() - cpu0
	pprof.StopCPUProfile()
	if f := failed.Load(); f > 0 {
		b.Fatalf("%d of %d provisionings failed; first: %v", f, n, firstErr.Load())
	}
	measure.ReportCPUSplit(b, prof.Bytes(), n, "provisionings/s", "prov", wall, cpu)
	tcp := stacks.TCPCounts().Add(netw.Stacks().TCPCounts())
	b.ReportMetric(float64(tcp.SegmentsSent-tcp0.SegmentsSent)/float64(n), "tcp-segments/prov")
	b.ReportMetric(float64(tcp.Retransmits-tcp0.Retransmits)/float64(n), "tcp-retransmits/prov")
	for _, d := range devs {
		if d.current().State != mebx.StatePost {
			b.Fatalf("%s is not provisioned", d.ID())
		}
		d.PowerOff()
	}
}

// BenchmarkDeviceRequest is the unit the provisioning figures are made of:
// one WS-MAN exchange on an open TLS-PSK setup session (Digest, HTTP,
// envelope both ways, the model), between one device and the scs client on
// the embedded LAN. It reports CPU per request split as BenchmarkProvisioning
// splits it, so a change to either side's request path shows here without
// a fleet's noise.
func BenchmarkDeviceRequest(b *testing.B) {
	bn := benchLAN(b)
	srv := bn.srv
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	devs, ids := bootSetupFleet(ctx, b, bn, 6, 1)
	defer devs[0].PowerOff()
	dial := srv.DialContext
	// The SCS's goroutines, net/http's connection loops among them, carry
	// its label from the start: the session is opened under it.
	scsCtx := pprof.WithLabels(ctx, pprof.Labels("amtsim", "scs"))
	pprof.SetGoroutineLabels(scsCtx)
	defer pprof.SetGoroutineLabels(ctx)
	s := scs.OpenSetup(scs.Target{Addr: devs[0].Addr().String(), Dial: dial, PID: ids[0].PID, PPS: ids[0].PPS, Password: "Bench-Pass1!"})
	defer s.Close()
	for _, c := range []struct {
		name string
		call func(context.Context) error
	}{
		{"Get", func(ctx context.Context) error {
			_, err := s.WSMAN.Get(ctx, wsman.GeneralSettings, nil)
			return err
		}},
		{"Invoke", func(ctx context.Context) error {
			_, err := s.WSMAN.Invoke(ctx, wsman.TimeSynchronizationService, "GetLowAccuracyTimeSynch", nil, nil)
			return err
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			// The session is open and logged in before the clock starts.
			if err := c.call(scsCtx); err != nil {
				b.Fatal(err)
			}
			var prof bytes.Buffer
			if err := pprof.StartCPUProfile(&prof); err != nil {
				b.Skipf("CPU profile unavailable (is -cpuprofile set?): %v", err)
			}
			cpu0 := measure.CPUTime()
			start := time.Now()
			var err error
			for i := 0; i < b.N && err == nil; i++ {
				err = c.call(scsCtx)
			}
			wall, cpu := time.Since(start), measure.CPUTime()-cpu0
			pprof.StopCPUProfile()
			if err != nil {
				b.Fatal(err)
			}
			measure.ReportCPUSplit(b, prof.Bytes(), b.N, "requests/s", "req", wall, cpu)
		})
	}
}
