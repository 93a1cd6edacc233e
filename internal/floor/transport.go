package floor

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/amtsim/amtsim/internal/measure"
	"github.com/amtsim/amtsim/lan"
)

// TCPSegment is the CPU one TCP segment costs on the embedded LAN, both
// ends in gVisor and the switch between them, with no TLS, HTTP or
// envelope above: n exchanges of size bytes each way on one open
// connection between two hosts, over the segments both stacks sent (data
// and ACKs). It is the process's CPU, so it should run with the process
// otherwise idle.
func TCPSegment(n, size int) (time.Duration, error) {
	netw, err := lan.StartNetwork(lan.NetworkOptions{})
	if err != nil {
		return 0, err
	}
	defer netw.Close()
	aAddr := netw.Subnet().Addr().Next().Next().Next()
	bAddr := aAddr.Next()
	a, err := netw.AddHost(net.HardwareAddr{2, 0xf1, 0, 0, 0, 0xa}, netip.PrefixFrom(aAddr, netw.Subnet().Bits()), nil)
	if err != nil {
		return 0, err
	}
	srv, err := netw.AddHost(net.HardwareAddr{2, 0xf1, 0, 0, 0, 0xb}, netip.PrefixFrom(bAddr, netw.Subnet().Bits()), nil)
	if err != nil {
		return 0, err
	}
	l, err := srv.Listen(7000, func(c net.Conn) {
		defer c.Close()
		buf := make([]byte, size)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	if err != nil {
		return 0, err
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := a.DialTCP(ctx, netip.AddrPortFrom(bAddr, 7000))
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Minute))
	buf := make([]byte, size)
	exchange := func() error {
		if _, err := c.Write(buf); err != nil {
			return err
		}
		_, err := io.ReadFull(c, buf)
		return err
	}
	for range 100 { // windows open, buffers grown
		if err := exchange(); err != nil {
			return 0, err
		}
	}
	seg0, cpu0 := netw.Stacks().TCPCounts().SegmentsSent, measure.CPUTime()
	for range n {
		if err := exchange(); err != nil {
			return 0, err
		}
	}
	cpu, segs := measure.CPUTime()-cpu0, netw.Stacks().TCPCounts().SegmentsSent-seg0
	if segs == 0 {
		return 0, fmt.Errorf("floor: %d exchanges sent no TCP segment", n)
	}
	return cpu / time.Duration(segs), nil
}

// ReportTransport measures TCPSegment and reports, beside a run's CPU and
// TCP segments per operation, what those segments cost the netstack and
// the LAN alone (transport-floor-cpu-µs/op) and the run's CPU over the
// floor f and that together (cpu/(floor+transport)): how much of what the
// run spends above its cryptography is the wire it must use.
func ReportTransport(b *testing.B, op string, cpuPer time.Duration, segmentsPer float64, f Floor) {
	b.Helper()
	seg, err := TCPSegment(2000, 2000)
	if err != nil {
		b.Fatal(err)
	}
	transport := time.Duration(float64(seg) * segmentsPer)
	b.ReportMetric(float64(seg.Nanoseconds())/1e3, "cpu-µs/tcp-segment")
	b.ReportMetric(float64(transport.Nanoseconds())/1e3, "transport-floor-cpu-µs/"+op)
	b.ReportMetric(float64(cpuPer)/float64(f.Total()+transport), "cpu/(floor+transport)")
}
