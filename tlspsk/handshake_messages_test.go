package tlspsk

import (
	"bytes"
	"testing"
)

func FuzzHandshakeMessages(f *testing.F) {
	ch := &clientHelloMsg{version: VersionTLS12, random: make([]byte, 32), cipherSuites: []uint16{0x8c, 0xff}, compression: []uint8{0}, secureRenegotiation: true}
	sh := &serverHelloMsg{version: VersionTLS10, random: make([]byte, 32), cipherSuite: 0x8c, secureRenegotiation: true}
	f.Add(typeClientHello, ch.marshal()[4:])
	f.Add(typeServerHello, sh.marshal()[4:])
	f.Add(typeClientKeyExchange, (&pskMsg{typ: typeClientKeyExchange, identity: []byte("0000037M")}).marshal()[4:])
	f.Add(typeFinished, make([]byte, 12))
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		// What parses re-encodes to something that parses the same way.
		switch typ {
		case typeClientHello:
			var m clientHelloMsg
			if m.unmarshal(body) {
				var again clientHelloMsg
				if !again.unmarshal(m.marshal()[4:]) || again.version != m.version || len(again.cipherSuites) < len(m.cipherSuites) {
					t.Fatalf("ClientHello round trip: %+v → %+v", m, again)
				}
			}
		case typeServerHello:
			var m serverHelloMsg
			if m.unmarshal(body) {
				var again serverHelloMsg
				if !again.unmarshal(m.marshal()[4:]) || again.cipherSuite != m.cipherSuite || again.version != m.version {
					t.Fatalf("ServerHello round trip: %+v → %+v", m, again)
				}
			}
		case typeClientKeyExchange, typeServerKeyExchange:
			m := pskMsg{typ: typ}
			if m.unmarshal(body) && !bytes.Equal(m.marshal()[4:], body) {
				t.Fatalf("PSK message round trip changed the bytes")
			}
		case typeFinished:
			var m finishedMsg
			if m.unmarshal(body) && !bytes.Equal(m.marshal()[4:], body) {
				t.Fatalf("Finished round trip changed the bytes")
			}
		}
	})
}
