package tlspsk

import (
	"fmt"
	"slices"
)

// serverHandshake runs the server side of the PSK handshake.
func (c *Conn) serverHandshake() error {
	cfg := c.cfg
	msg, err := c.expect(typeClientHello)
	if err != nil {
		return err
	}
	transcript := append([]byte(nil), msg...)
	var ch clientHelloMsg
	if !ch.unmarshal(msg[4:]) {
		return c.fail(alertDecodeError, "ClientHello")
	}
	if ch.version < cfg.minVersion() {
		return c.fail(alertProtocolVersion, fmt.Sprintf("client offers at most %#04x", ch.version))
	}
	version := min(ch.version, cfg.maxVersion())
	var s *suite
	for _, id := range cfg.suites() {
		if cand := suiteByID(id); cand != nil && slices.Contains(ch.cipherSuites, id) && (!cand.tls12 || version >= VersionTLS12) {
			s = cand
			break
		}
	}
	if s == nil {
		return c.fail(alertHandshakeFailure, "no PSK cipher suite in common")
	}
	if !slices.Contains(ch.compression, 0) {
		return c.fail(alertHandshakeFailure, "client does not offer null compression")
	}
	c.in.version, c.out.version = version, version

	serverRandom, err := randomBytes(cfg.rand(), 32)
	if err != nil {
		return c.fail(alertInternalError, err.Error())
	}
	sh := serverHelloMsg{version: version, random: serverRandom, cipherSuite: s.id,
		secureRenegotiation: ch.secureRenegotiation && !cfg.NoSecureRenegotiation}
	flight := sh.marshal()
	if cfg.IdentityHint != "" {
		flight = append(flight, (&pskMsg{typ: typeServerKeyExchange, identity: []byte(cfg.IdentityHint)}).marshal()...)
	}
	flight = append(flight, message(typeServerHelloDone, nil)...)
	transcript = append(transcript, flight...)
	if err := c.writeRecord(recordHandshake, flight); err != nil {
		return err
	}

	msg, err = c.expect(typeClientKeyExchange)
	if err != nil {
		return err
	}
	transcript = append(transcript, msg...)
	var cke pskMsg
	if !cke.unmarshal(msg[4:]) {
		return c.fail(alertDecodeError, "ClientKeyExchange")
	}
	if len(cke.identity) > maxPSKIdentityLen {
		return c.fail(alertIllegalParameter, fmt.Sprintf("PSK identity of %d bytes", len(cke.identity)))
	}
	identity := string(cke.identity)
	var key []byte
	if cfg.GetKey != nil {
		key, err = cfg.GetKey(identity)
	}
	if err != nil || len(key) == 0 {
		// The identity is not a secret, but it came from the network:
		// quote it, never the key.
		return c.fail(alertUnknownPSKIdentity, fmt.Sprintf("no key for identity %q", identity))
	}
	master, ck, sk := keySchedule(version, s, premasterSecret(key), ch.random, serverRandom)

	if err := c.switchIn(version, s, ck); err != nil {
		return err
	}
	msg, err = c.readFinished(finished(version, s, master, transcript, "client finished"))
	if err != nil {
		return err
	}
	transcript = append(transcript, msg...)
	if err := c.switchOut(version, s, sk); err != nil {
		return err
	}
	fin := finishedMsg{verifyData: finished(version, s, master, transcript, "server finished")}
	if err := c.writeRecord(recordHandshake, fin.marshal()); err != nil {
		return err
	}
	c.state = ConnectionState{Version: version, CipherSuite: s.id, Identity: identity, Hint: cfg.IdentityHint}
	return nil
}
