package nic

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
)

// synFrame builds an Ethernet/IPv4/TCP frame with the given flags.
func synFrame(t testing.TB, syn, ack, rst bool, fragOffset uint16) []byte {
	eth := &layers.Ethernet{SrcMAC: testMAC, DstMAC: testMAC, EthernetType: layers.EthernetTypeIPv4}
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, FragOffset: fragOffset,
		SrcIP: []byte{198, 18, 0, 2}, DstIP: []byte{198, 18, 1, 2}}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 16992, Seq: 7, SYN: syn, ACK: ack, RST: rst, Window: 1024,
		Options: []layers.TCPOption{{OptionType: layers.TCPOptionKindMSS, OptionLength: 4, OptionData: []byte{5, 0xb4}}}}
	if err := tcp.SetNetworkLayerForChecksum(ip); err != nil {
		t.Fatal(err)
	}
	buf := gopacket.NewSerializeBuffer()
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}, eth, ip, tcp); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestSynTo(t *testing.T) {
	for _, c := range []struct {
		name          string
		syn, ack, rst bool
		frag          uint16
		want          bool
	}{
		{"SYN", true, false, false, 0, true},
		{"SYN-ACK", true, true, false, 0, false},
		{"ACK", false, true, false, 0, false},
		{"SYN+RST", true, false, true, 0, false},
		{"a fragment", true, false, false, 8, false},
	} {
		port, _, _, ok := synTo(synFrame(t, c.syn, c.ack, c.rst, c.frag))
		if ok != c.want || (ok && port != 16992) {
			t.Errorf("%s: synTo = %d, %v; want 16992, %v", c.name, port, ok, c.want)
		}
	}
}

// FuzzSynTo holds synTo, which reads frames off the wire, to gopacket's
// reading of the same bytes: it takes a frame as a SYN exactly when
// gopacket finds an unfragmented IPv4 datagram with a TCP header whose only
// flag of SYN, ACK and RST is SYN, and then names its port.
func FuzzSynTo(f *testing.F) {
	for _, fr := range [][]byte{
		synFrame(f, true, false, false, 0), synFrame(f, true, true, false, 0),
		synFrame(f, false, true, false, 0), synFrame(f, true, false, false, 8),
		synFrame(f, true, false, false, 0)[:40], make([]byte, 60),
	} {
		f.Add(fr)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		port, at, total, ok := synTo(frame)
		p := gopacket.NewPacket(frame, layers.LayerTypeEthernet, gopacket.DecodeOptions{Lazy: false, NoCopy: true})
		eth, _ := p.Layer(layers.LayerTypeEthernet).(*layers.Ethernet)
		ip, _ := p.Layer(layers.LayerTypeIPv4).(*layers.IPv4)
		tcp, _ := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if ok {
			if at < 34 || at+20 > 14+total || 14+total > len(frame) {
				t.Fatalf("TCP header at %d of a %d-byte datagram in a %d-byte frame", at, total, len(frame))
			}
			if eth == nil || eth.EthernetType != layers.EthernetTypeIPv4 {
				t.Fatalf("a SYN in a frame gopacket does not read as IPv4")
			}
			if ip != nil && tcp != nil && (!tcp.SYN || tcp.ACK || tcp.RST || uint16(tcp.DstPort) != port) {
				t.Fatalf("synTo says SYN to %d; gopacket reads %+v", port, tcp)
			}
			return
		}
		// gopacket decodes only what the IPv4 header's lengths allow; take
		// its word where it read a whole, unfragmented TCP header. (It
		// reads a stated length of 0 as "the rest of the frame", for
		// segmentation offload; gVisor, and synTo, drop such a datagram.)
		if ip != nil && binary.BigEndian.Uint16(frame[16:18]) == ip.Length && tcp != nil && ip.Version == 4 && ip.IHL >= 5 && ip.Flags&layers.IPv4MoreFragments == 0 && ip.FragOffset == 0 &&
			tcp.SYN && !tcp.ACK && !tcp.RST && eth != nil && eth.EthernetType == layers.EthernetTypeIPv4 &&
			int(ip.Length) >= int(ip.IHL)*4+20 && 14+int(ip.Length) <= len(frame) {
			t.Fatalf("gopacket reads a SYN to %d that synTo missed", tcp.DstPort)
		}
	})
}

// A host keeps only the listeners that are open: one replaced or closed
// is forgotten, so that re-arming its ports does not grow the host.
func TestHostForgetsClosedListeners(t *testing.T) {
	stacks := NewStacks(StackOptions{})
	defer stacks.Close()
	c, err := New(Options{MAC: testMAC, Uplink: &wire{}})
	if err != nil {
		t.Fatal(err)
	}
	h, err := stacks.Attach(c)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for range 5 {
		a, err := h.Listen(16992, func(net.Conn) {})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := h.Listen(16992, func(net.Conn) {}); err != nil { // replaces a
			t.Fatal(err)
		}
		b, err := h.Listen(16993, func(net.Conn) {})
		if err != nil {
			t.Fatal(err)
		}
		_ = a.Close() // already closed by the replacement: no effect
		_ = b.Close()
	}
	h.lmu.Lock()
	n := len(h.listeners)
	h.lmu.Unlock()
	if n != 1 {
		t.Errorf("the host keeps %d listeners, want 1 (16992's last)", n)
	}
	if pl := h.ss.listener(16992); pl == nil || !pl.serves(h.id) {
		t.Error("16992 is not served")
	}
	if pl := h.ss.listener(16993); pl == nil || pl.serves(h.id) {
		t.Error("16993 is still served after its listener closed")
	}
}
