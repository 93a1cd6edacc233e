package nic_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/amtsim/amtsim/internal/measure"
	"github.com/amtsim/amtsim/lan"
)

// BenchmarkTCPExchange is the transport alone under a provisioning: one
// request and one answer of a WS-MAN call's size on an open connection
// between two hosts of the embedded LAN, gVisor on both ends, no TLS, HTTP
// or envelope. It reports CPU per exchange and per TCP segment (data and
// ACKs, both directions), the cost any provisioning pays for each segment it
// sends before its own work.
func BenchmarkTCPExchange(b *testing.B) {
	for _, sz := range []struct {
		name      string
		req, resp int
	}{{"1k-1k", 1000, 1000}, {"2k-2k", 2000, 2000}} {
		b.Run(sz.name, func(b *testing.B) {
			n, err := lan.StartNetwork(lan.NetworkOptions{})
			if err != nil {
				b.Fatal(err)
			}
			defer n.Close()
			aAddr := n.Subnet().Addr().Next().Next().Next()
			bAddr := aAddr.Next()
			a, err := n.AddHost(net.HardwareAddr{2, 0, 0, 0, 0, 0xa}, netip.PrefixFrom(aAddr, n.Subnet().Bits()), nil)
			if err != nil {
				b.Fatal(err)
			}
			srv, err := n.AddHost(net.HardwareAddr{2, 0, 0, 0, 0, 0xb}, netip.PrefixFrom(bAddr, n.Subnet().Bits()), nil)
			if err != nil {
				b.Fatal(err)
			}
			l, err := srv.Listen(7000, func(c net.Conn) {
				defer c.Close()
				in, out := make([]byte, sz.req), make([]byte, sz.resp)
				for {
					if _, err := io.ReadFull(c, in); err != nil {
						return
					}
					if _, err := c.Write(out); err != nil {
						return
					}
				}
			})
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := a.DialTCP(ctx, netip.AddrPortFrom(bAddr, 7000))
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req, resp := make([]byte, sz.req), make([]byte, sz.resp)
			exchange := func() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, resp); err != nil {
					b.Fatal(err)
				}
			}
			for range 100 {
				exchange()
			}
			b.ResetTimer()
			seg0, cpu0 := n.Stacks().TCPCounts().SegmentsSent, measure.CPUTime()
			for range b.N {
				exchange()
			}
			cpu, segs := measure.CPUTime()-cpu0, n.Stacks().TCPCounts().SegmentsSent-seg0
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(b.N), "cpu-µs/exchange")
			b.ReportMetric(float64(segs)/float64(b.N), "segments/exchange")
			b.ReportMetric(float64(cpu.Nanoseconds())/1e3/float64(segs), "cpu-µs/segment")
		})
	}
}
