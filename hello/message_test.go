package hello

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/identity"
)

func TestPSKHelloLayout(t *testing.T) {
	id, err := identity.Of(7, 0, 3)
	require.NoError(t, err)
	m := Message{AdminSet: true, Version: VersionPSK, Retry: 9, UUID: id.UUID, PID: id.PID}
	b, err := m.Marshal()
	require.NoError(t, err)
	require.Len(t, b, 32)
	assert.Equal(t, []byte{1, 0}, b[0:2], "admin set, little-endian u16")
	assert.Equal(t, []byte{2, 0}, b[2:4], "version 2")
	assert.Equal(t, []byte{9, 0, 0, 0}, b[4:8], "retry, little-endian u32")
	u := id.UUID.SMBIOSBytes()
	assert.Equal(t, u[:], b[8:24])
	// Dell's first UUID field 4C4C4544 goes little-endian: "DELL" in ASCII.
	assert.Equal(t, "DELL", string(b[8:12]))
	assert.Equal(t, id.PID, string(b[24:32]))

	var back Message
	require.NoError(t, back.Unmarshal(b))
	assert.Equal(t, m, back)
}

// The PKI header seen from a real device (docs/protocol.md §3).
func TestPKIHeaderFromARealDevice(t *testing.T) {
	hdr, err := hex.DecodeString("0100" + "0300" + "00000000" + "4b529b93d413181de4871c697a6b7a2b" + "17")
	require.NoError(t, err)
	b := append([]byte(nil), hdr...)
	for i := range 23 {
		b = append(b, byte(HashSHA256), 32)
		b = append(b, bytes.Repeat([]byte{byte(i)}, 32)...)
	}
	var m Message
	require.NoError(t, m.Unmarshal(b))
	assert.True(t, m.AdminSet)
	assert.Equal(t, VersionPKI, m.Version)
	assert.Zero(t, m.Retry)
	assert.Equal(t, "939b524b-13d4-1d18-e487-1c697a6b7a2b", strings.ToLower(m.UUID.String()))
	require.Len(t, m.Hashes, 23)
	assert.Equal(t, bytes.Repeat([]byte{22}, 32), m.Hashes[22].Hash)

	again, err := m.Marshal()
	require.NoError(t, err)
	assert.Equal(t, b, again)
}

func TestDecodeRejects(t *testing.T) {
	id, _ := identity.Of(1, 0, 0)
	good := Message{Version: VersionPSK, UUID: id.UUID, PID: id.PID}
	b, err := good.Marshal()
	require.NoError(t, err)
	mutate := func(f func([]byte) []byte) []byte { return f(append([]byte(nil), b...)) }
	for name, in := range map[string][]byte{
		"empty":         nil,
		"short header":  b[:20],
		"short PID":     b[:30],
		"trailing":      append(append([]byte(nil), b...), 0),
		"admin 2":       mutate(func(x []byte) []byte { x[0] = 2; return x }),
		"version 4":     mutate(func(x []byte) []byte { x[2] = 4; return x }),
		"retry 15":      mutate(func(x []byte) []byte { x[4] = 15; return x }),
		"PID lowercase": mutate(func(x []byte) []byte { x[24] = 'a'; return x }),
		"PKI bad hash":  append(mutate(func(x []byte) []byte { x[2] = 3; return x[:24] }), 1, 9, 32),
		"PKI cut off":   append(mutate(func(x []byte) []byte { x[2] = 3; return x[:24] }), 1, 1, 20, 0),
	} {
		var m Message
		err := m.Unmarshal(in)
		assert.ErrorIs(t, err, ErrMalformed, name)
	}
}

func TestMarshalRefuses(t *testing.T) {
	for name, m := range map[string]Message{
		"retry 15":     {Version: VersionPSK, Retry: 15, PID: "0000037M"},
		"short PID":    {Version: VersionPSK, PID: "037M"},
		"dashed PID":   {Version: VersionPSK, PID: "0000-037"},
		"version 1":    {Version: 1, PID: "0000037M"},
		"PKI bad size": {Version: VersionPKI, Hashes: []CertHash{{Type: HashSHA1, Hash: make([]byte, 32)}}},
	} {
		_, err := m.Marshal()
		assert.Error(t, err, name)
	}
}

func TestReadFromAStream(t *testing.T) {
	id, _ := identity.Of(1, 0, 5)
	a := Message{Version: VersionPSK, Retry: 1, UUID: id.UUID, PID: id.PID}
	p := Message{Version: VersionPKI, UUID: id.UUID, Hashes: []CertHash{{Type: HashSHA1, Hash: make([]byte, 20)}, {Type: HashSHA384, Hash: bytes.Repeat([]byte{7}, 48)}}}
	ab, _ := a.Marshal()
	pb, _ := p.Marshal()
	r := bytes.NewReader(append(append(ab, pb...), 0xEE))
	got, err := Read(r)
	require.NoError(t, err)
	assert.Equal(t, a, got)
	got, err = Read(r)
	require.NoError(t, err)
	assert.Equal(t, p, got)
	rest, _ := io.ReadAll(r)
	assert.Equal(t, []byte{0xEE}, rest, "Read stops at the end of the Hello")

	_, err = Read(bytes.NewReader(nil))
	assert.Equal(t, io.EOF, err)
	_, err = Read(bytes.NewReader(ab[:27]))
	assert.ErrorIs(t, err, ErrMalformed)
	assert.True(t, errors.Is(err, io.ErrUnexpectedEOF))
}

func FuzzUnmarshal(f *testing.F) {
	id, _ := identity.Of(1, 0, 0)
	for _, m := range []Message{
		{Version: VersionPSK, UUID: id.UUID, PID: id.PID},
		{AdminSet: true, Version: VersionPSK, Retry: 14, UUID: id.UUID, PID: "0000037M"},
		{Version: VersionPKI, UUID: id.UUID, Hashes: []CertHash{{Type: HashSHA256, Hash: make([]byte, 32)}}},
	} {
		b, err := m.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add(make([]byte, 24))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m Message
		err := m.Unmarshal(b)
		s, rerr := Read(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// What decodes re-encodes to the same bytes, and reads the same
		// from a stream.
		out, merr := m.Marshal()
		if merr != nil {
			t.Fatalf("decoded %+v does not encode: %v", m, merr)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("round trip changed the bytes:\n in %x\nout %x", b, out)
		}
		if rerr != nil {
			t.Fatalf("Unmarshal accepted what Read refused: %v", rerr)
		}
		if s.Version != m.Version || s.Retry != m.Retry || s.PID != m.PID || len(s.Hashes) != len(m.Hashes) {
			t.Fatalf("Read %+v, Unmarshal %+v", s, m)
		}
	})
}

// FuzzPKIHello holds the version 3 decoder to the layout as an SCS reads
// it (MeshCentral's parser, docs/protocol.md §11), written out here a
// second time: u16 admin ≤ 1, u16 version 3, u32 retry, 16-byte UUID, u8 N,
// N × {type 1/2/3, length 20/32/48, hash}. Where that reading takes the
// bytes whole, Unmarshal must take them and agree; where Unmarshal takes a
// version 3 Hello, that reading must too.
func FuzzPKIHello(f *testing.F) {
	id, _ := identity.Of(1, 0, 0)
	seed := func(hs ...CertHash) {
		m := Message{AdminSet: true, Version: VersionPKI, UUID: id.UUID, Hashes: hs}
		b, err := m.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	var sha1s, sha256s []CertHash
	for i := range 5 {
		sha1s = append(sha1s, CertHash{Type: HashSHA1, Hash: bytes.Repeat([]byte{byte(i)}, 20)})
	}
	for i := range 23 {
		sha256s = append(sha256s, CertHash{Type: HashSHA256, Hash: bytes.Repeat([]byte{byte(i)}, 32)})
	}
	seed(sha1s...)
	seed(sha256s...)
	seed(CertHash{Type: HashSHA384, Hash: make([]byte, 48)}, CertHash{Type: HashSHA1, Hash: make([]byte, 20)})
	seed()
	f.Add(append(make([]byte, 2), 3, 0, 0, 0, 0, 0))
	f.Fuzz(func(t *testing.T, b []byte) {
		type entry struct {
			typ  byte
			hash []byte
		}
		reference := func() ([]entry, bool) {
			if len(b) < 25 || binary.LittleEndian.Uint16(b[0:]) > 1 || binary.LittleEndian.Uint16(b[2:]) != 3 ||
				binary.LittleEndian.Uint32(b[4:]) > MaxRetry {
				return nil, false
			}
			var out []entry
			p := 25
			for range int(b[24]) {
				if p+2 > len(b) {
					return nil, false
				}
				size := map[byte]int{1: 20, 2: 32, 3: 48}[b[p]]
				if size == 0 || int(b[p+1]) != size || p+2+size > len(b) {
					return nil, false
				}
				out = append(out, entry{b[p], b[p+2 : p+2+size]})
				p += 2 + size
			}
			return out, p == len(b)
		}
		want, whole := reference()
		var m Message
		err := m.Unmarshal(b)
		if whole != (err == nil && m.Version == VersionPKI) {
			t.Fatalf("reference whole=%v, Unmarshal %+v, %v", whole, m, err)
		}
		if !whole {
			return
		}
		if len(m.Hashes) != len(want) {
			t.Fatalf("%d hashes, the reference reads %d", len(m.Hashes), len(want))
		}
		for i, h := range m.Hashes {
			if byte(h.Type) != want[i].typ || !bytes.Equal(h.Hash, want[i].hash) {
				t.Fatalf("hash %d: %v, the reference reads %v", i, h, want[i])
			}
		}
		if got := m.UUID.SMBIOSBytes(); !bytes.Equal(got[:], b[8:24]) {
			t.Fatalf("UUID %s is not bytes 8–24 in SMBIOS order", m.UUID)
		}
	})
}
