package tlspsk

import (
	"errors"
	"fmt"
	"slices"
)

// clientHandshake runs the client side of the PSK handshake.
func (c *Conn) clientHandshake() error {
	cfg := c.cfg
	if len(cfg.Key) == 0 {
		return errors.New("tlspsk: client has no key")
	}
	if len(cfg.Identity) > maxPSKIdentityLen {
		return fmt.Errorf("tlspsk: identity of %d bytes (at most %d)", len(cfg.Identity), maxPSKIdentityLen)
	}
	clientRandom, err := randomBytes(cfg.rand(), 32)
	if err != nil {
		return err
	}
	ch := clientHelloMsg{version: cfg.maxVersion(), random: clientRandom, compression: []uint8{0}}
	for _, id := range cfg.suites() {
		if s := suiteByID(id); s != nil && (!s.tls12 || ch.version >= VersionTLS12) {
			ch.cipherSuites = append(ch.cipherSuites, id)
		}
	}
	if len(ch.cipherSuites) == 0 {
		return errors.New("tlspsk: no cipher suite to offer at this version")
	}
	if !cfg.NoSecureRenegotiation {
		ch.cipherSuites = append(ch.cipherSuites, scsvRenegotiation)
	}
	msg := ch.marshal()
	transcript := append([]byte(nil), msg...)
	if err := c.writeRecord(recordHandshake, msg); err != nil {
		return err
	}

	msg, err = c.expect(typeServerHello)
	if err != nil {
		return err
	}
	transcript = append(transcript, msg...)
	var sh serverHelloMsg
	if !sh.unmarshal(msg[4:]) {
		return c.fail(alertDecodeError, "ServerHello")
	}
	if sh.version < cfg.minVersion() || sh.version > ch.version {
		return c.fail(alertProtocolVersion, fmt.Sprintf("server chose %#04x", sh.version))
	}
	s := suiteByID(sh.cipherSuite)
	if s == nil || !slices.Contains(ch.cipherSuites, sh.cipherSuite) || (s.tls12 && sh.version < VersionTLS12) {
		return c.fail(alertIllegalParameter, fmt.Sprintf("server chose suite %#04x", sh.cipherSuite))
	}
	version := sh.version
	c.in.version, c.out.version = version, version

	var hint string
	msg, err = c.readHandshake()
	if err != nil {
		return err
	}
	if msg[0] == typeServerKeyExchange {
		transcript = append(transcript, msg...)
		var ske pskMsg
		if !ske.unmarshal(msg[4:]) {
			return c.fail(alertDecodeError, "ServerKeyExchange")
		}
		hint = string(ske.identity)
		if msg, err = c.readHandshake(); err != nil {
			return err
		}
	}
	if msg[0] != typeServerHelloDone || len(msg) != 4 {
		return c.fail(alertUnexpectedMessage, fmt.Sprintf("handshake message %d, want ServerHelloDone", msg[0]))
	}
	transcript = append(transcript, msg...)

	cke := (&pskMsg{typ: typeClientKeyExchange, identity: []byte(cfg.Identity)}).marshal()
	transcript = append(transcript, cke...)
	// ClientKeyExchange, ChangeCipherSpec and Finished leave as one flight.
	c.setCork(true)
	if err := c.writeRecord(recordHandshake, cke); err != nil {
		return c.peerAlert(err)
	}
	master, ck, sk := keySchedule(version, s, premasterSecret(cfg.Key), clientRandom, sh.random)
	if err := c.switchOut(version, s, ck); err != nil {
		return err
	}
	fin := finishedMsg{verifyData: finished(version, s, master, transcript, "client finished")}
	transcript = append(transcript, fin.marshal()...)
	c.setCork(false)
	if err := c.writeRecord(recordHandshake, fin.marshal()); err != nil {
		return c.peerAlert(err)
	}
	if err := c.switchIn(version, s, sk); err != nil {
		return err
	}
	if _, err := c.readFinished(finished(version, s, master, transcript, "server finished")); err != nil {
		return err
	}
	c.state = ConnectionState{Version: version, CipherSuite: s.id, Identity: cfg.Identity, Hint: hint}
	return nil
}
