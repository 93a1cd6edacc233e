package nic

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

var (
	vnetSrc = tcpip.AddrFrom4([4]byte{198, 19, 248, 1})
	vnetDst = tcpip.AddrFrom4([4]byte{198, 19, 248, 100})
)

// tcpFrame is an Ethernet TCP/IPv4 frame as a local stack hands it to a
// veth that offloads: the TCP checksum holds only the pseudo-header sum
// (of the whole frame's TCP length), the IPv4 checksum is whole.
func tcpFrame(payload []byte, flags header.TCPFlags, seq uint32, id uint16) []byte {
	const ihl, thl = header.IPv4MinimumSize, header.TCPMinimumSize + 12 // with a timestamp option
	b := make([]byte, ethernetHdrSize+ihl+thl+len(payload))
	eth := header.Ethernet(b)
	eth.Encode(&header.EthernetFields{SrcAddr: "\x02\x00\x00\x00\x00\x01", DstAddr: "\x00\x1d\x09\x60\x7a\xc1", Type: header.IPv4ProtocolNumber})
	ip := header.IPv4(b[ethernetHdrSize:])
	ip.Encode(&header.IPv4Fields{TotalLength: uint16(len(ip)), ID: id, Flags: header.IPv4FlagDontFragment, TTL: 64,
		Protocol: uint8(header.TCPProtocolNumber), SrcAddr: vnetSrc, DstAddr: vnetDst})
	ip.SetChecksum(^ip.CalculateChecksum())
	tcp := header.TCP(ip[ihl:])
	tcp.Encode(&header.TCPFields{SrcPort: 16993, DstPort: 40000, SeqNum: seq, AckNum: 7, DataOffset: thl, Flags: flags, WindowSize: 512})
	copy(tcp[header.TCPMinimumSize:], []byte{1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2})
	copy(tcp[thl:], payload)
	tcp.SetChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, vnetSrc, vnetDst, uint16(thl+len(payload))))
	return b
}

// tcpValid says whether a frame's IPv4 and TCP checksums are both right.
func tcpValid(t *testing.T, frame []byte) {
	t.Helper()
	ip := header.IPv4(frame[ethernetHdrSize:])
	require.True(t, ip.IsChecksumValid(), "IPv4 checksum")
	tcp := ip.Payload()
	require.Equal(t, int(ip.TotalLength()), len(ip), "IPv4 total length")
	ph := header.PseudoHeaderChecksum(header.TCPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(tcp)))
	require.Equal(t, uint16(0xffff), checksum.Checksum(tcp, ph), "TCP checksum")
}

func TestVnetFillsAnOffloadedChecksum(t *testing.T) {
	frame := tcpFrame([]byte("HTTP/1.1 200 OK\r\n"), header.TCPFlagAck|header.TCPFlagPsh, 1000, 1)
	h := vnetHdr{Flags: vnetNeedsCsum, CsumStart: ethernetHdrSize + header.IPv4MinimumSize, CsumOffs: header.TCPChecksumOffset}
	var got [][]byte
	require.NoError(t, h.resolve(frame, make([]byte, 1518), func(b []byte) { got = append(got, append([]byte(nil), b...)) }))
	require.Len(t, got, 1)
	tcpValid(t, got[0])

	// Out of the frame: refused, nothing delivered.
	for _, bad := range []vnetHdr{
		{Flags: vnetNeedsCsum, CsumStart: uint16(len(frame) - 1)},
		{Flags: vnetNeedsCsum, CsumStart: 4},
		{Flags: vnetNeedsCsum, CsumStart: 34, CsumOffs: 0xffff},
	} {
		assert.Error(t, bad.resolve(frame, make([]byte, 1518), func([]byte) { t.Fatal("delivered") }), "%+v", bad)
	}
}

func TestVnetSegmentsGSO(t *testing.T) {
	payload := make([]byte, 3000)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	frame := tcpFrame(payload, header.TCPFlagAck|header.TCPFlagPsh|header.TCPFlagFin|header.TCPFlagCwr, 0xfffffc00, 0xfffe)
	h := vnetHdr{Flags: vnetNeedsCsum, GSOType: vnetGSOTCPv4 | vnetGSOECN, GSOSize: 1448, HdrLen: 66,
		CsumStart: ethernetHdrSize + header.IPv4MinimumSize, CsumOffs: header.TCPChecksumOffset}
	var segs [][]byte
	require.NoError(t, h.resolve(frame, make([]byte, 1518), func(b []byte) { segs = append(segs, append([]byte(nil), b...)) }))
	require.Len(t, segs, 3)
	var joined []byte
	for i, s := range segs {
		tcpValid(t, s)
		ip := header.IPv4(s[ethernetHdrSize:])
		tcp := header.TCP(ip.Payload())
		assert.Equal(t, uint16(0xfffe+i), ip.ID(), "IPv4 ID of segment %d (wraps)", i)
		assert.Equal(t, uint32(0xfffffc00)+uint32(len(joined)), tcp.SequenceNumber(), "sequence of segment %d (wraps)", i)
		assert.Equal(t, frame[ethernetHdrSize+20+20:ethernetHdrSize+20+32], []byte(tcp[20:32]), "options copied")
		f := tcp.Flags()
		assert.Equal(t, i == 2, f.Contains(header.TCPFlagFin), "FIN only on the last")
		assert.Equal(t, i == 2, f.Contains(header.TCPFlagPsh), "PSH only on the last")
		assert.Equal(t, i == 0, f.Contains(header.TCPFlagCwr), "CWR only on the first")
		assert.True(t, f.Contains(header.TCPFlagAck))
		assert.Equal(t, frame[:12], s[:12], "Ethernet addresses")
		joined = append(joined, tcp.Payload()...)
	}
	assert.Equal(t, 1448, len(header.IPv4(segs[0][ethernetHdrSize:]).Payload())-32)
	assert.True(t, bytes.Equal(payload, joined), "payload in order, whole")

	// What a device could not take: refused whole.
	for name, c := range map[string]struct {
		h     vnetHdr
		frame []byte
	}{
		"TCPv6":              {vnetHdr{GSOType: 4, GSOSize: 1000}, frame},
		"UDP_L4":             {vnetHdr{GSOType: 5, GSOSize: 1000}, frame},
		"segment beyond MTU": {vnetHdr{GSOType: vnetGSOTCPv4, GSOSize: 1480}, frame},
		"no segment size":    {vnetHdr{GSOType: vnetGSOTCPv4}, frame},
		"short":              {vnetHdr{GSOType: vnetGSOTCPv4, GSOSize: 100}, frame[:40]},
		"length lies":        {vnetHdr{GSOType: vnetGSOTCPv4, GSOSize: 100}, frame[:len(frame)-1]},
		"not TCP":            {vnetHdr{GSOType: vnetGSOTCPv4, GSOSize: 100}, func() []byte { b := bytes.Clone(frame); b[23] = 17; return b }()},
		"not IPv4":           {vnetHdr{GSOType: vnetGSOTCPv4, GSOSize: 100}, func() []byte { b := bytes.Clone(frame); b[12] = 0x86; b[13] = 0xdd; return b }()},
		"data offset":        {vnetHdr{GSOType: vnetGSOTCPv4, GSOSize: 100}, func() []byte { b := bytes.Clone(frame); b[46] = 0x10; return b }()},
	} {
		assert.Error(t, c.h.resolve(c.frame, make([]byte, 1518), func([]byte) { t.Fatalf("%s: delivered", name) }), name)
	}
}

func TestVnetHdrRoundTrip(t *testing.T) {
	h := vnetHdr{Flags: 1, GSOType: 0x81, HdrLen: 66, GSOSize: 1448, CsumStart: 34, CsumOffs: 16}
	var b [vnetHdrLen + 3]byte
	h.marshal(b[:])
	b[10], b[11], b[12] = 'a', 'b', 'c'
	got, rest, err := parseVnetHdr(b[:])
	require.NoError(t, err)
	assert.Equal(t, h, got)
	assert.Equal(t, []byte("abc"), rest)
	assert.Equal(t, uint16(1448), binary.LittleEndian.Uint16(b[4:]), "little-endian, as Linux writes it")
	_, _, err = parseVnetHdr(b[:9])
	assert.ErrorIs(t, err, errVnetShort)
}

// FuzzVnetResolve holds resolve to what it says: it never delivers more
// than the scratch holds, a checksum it fills verifies, and the segments
// of a GSO frame it accepts carry the frame's payload whole, in order,
// each with valid checksums.
func FuzzVnetResolve(f *testing.F) {
	seed := func(h vnetHdr, frame []byte) {
		b := make([]byte, vnetHdrLen+len(frame))
		h.marshal(b)
		copy(b[vnetHdrLen:], frame)
		f.Add(b)
	}
	small := tcpFrame([]byte("abc"), header.TCPFlagAck, 1, 1)
	seed(vnetHdr{Flags: vnetNeedsCsum, CsumStart: 34, CsumOffs: 16}, small)
	seed(vnetHdr{}, small)
	seed(vnetHdr{Flags: vnetNeedsCsum, GSOType: vnetGSOTCPv4, GSOSize: 500, CsumStart: 34, CsumOffs: 16}, tcpFrame(make([]byte, 1400), header.TCPFlagAck|header.TCPFlagFin, 9, 9))
	seed(vnetHdr{GSOType: 4, GSOSize: 500}, small)
	f.Fuzz(func(t *testing.T, b []byte) {
		h, frame, err := parseVnetHdr(b)
		if err != nil {
			return
		}
		orig := bytes.Clone(frame)
		scratch := make([]byte, 1518)
		var segs [][]byte
		err = h.resolve(frame, scratch, func(s []byte) {
			if len(s) > len(scratch) {
				t.Fatalf("delivered %d bytes, more than the %d-byte MTU", len(s), len(scratch))
			}
			segs = append(segs, bytes.Clone(s))
		})
		if err != nil {
			if len(segs) != 0 {
				t.Fatalf("error %v after delivering %d frames", err, len(segs))
			}
			return
		}
		if h.GSOType&^vnetGSOECN == vnetGSONone {
			if len(segs) != 1 {
				t.Fatalf("%d frames from one", len(segs))
			}
			if h.Flags&vnetNeedsCsum != 0 {
				start, at := int(h.CsumStart), int(h.CsumStart)+int(h.CsumOffs)
				// The sum over the range with the old field (the
				// pseudo-header sum) added back in is all ones.
				p := binary.BigEndian.Uint16(orig[at:])
				if s := checksum.Combine(checksum.Checksum(segs[0][start:], 0), p); s != 0xffff {
					t.Fatalf("filled checksum does not verify: %#04x", s)
				}
			}
			return
		}
		var payload []byte
		for _, s := range segs {
			tcpValid(t, s)
			ip := header.IPv4(s[ethernetHdrSize:])
			payload = append(payload, header.TCP(ip.Payload()).Payload()...)
		}
		ip := header.IPv4(orig[ethernetHdrSize:])
		if want := header.TCP(ip.Payload()).Payload(); !bytes.Equal(want, payload) {
			t.Fatalf("segments carry %d bytes, the frame %d", len(payload), len(want))
		}
	})
}
