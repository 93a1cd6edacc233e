package firmware

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/amtsim/amtsim/digest"
	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/ptstatus"
)

// The device model: every AMT operation the two front ends (WS-MAN and
// EOI) offer, on a session, answered with the PT_STATUS the firmware gives
// in that state. Changes go to the session's staged settings; only
// CommitChanges and the unprovision calls persist anything.

// maxUsers is AMT 5's number of user ACL entries.
const maxUsers = mebx.MaxUsers

// setupOnly answers the provisioning calls outside setup mode.
func setupOnly(s *mebx.Settings) ptstatus.Code {
	if s.State != mebx.StateIn {
		return ptstatus.InvalidProvisioningState
	}
	return ptstatus.Success
}

// SetTLSPSK replaces PID/PPS (setup only), in the SDK's format (with or
// without dashes).
func (s *session) SetTLSPSK(pid, pps string) ptstatus.Code {
	return s.change(func(m *mebx.Settings) ptstatus.Code {
		if st := setupOnly(m); st != ptstatus.Success {
			return st
		}
		p, err := identity.NormalizePID(pid)
		if err != nil {
			return ptstatus.InvalidPIDFormat
		}
		k, err := identity.NormalizePPS(pps)
		if err != nil {
			return ptstatus.InvalidPPSFormat
		}
		m.PID, m.PPS = p, k
		return ptstatus.Success
	})
}

// SetMEBxPassword sets the MEBx password under the strong password policy.
func (s *session) SetMEBxPassword(p string) ptstatus.Code {
	return s.change(func(m *mebx.Settings) ptstatus.Code {
		if err := m.SetPassword(p); err != nil {
			return ptstatus.InvalidPassword
		}
		return ptstatus.Success
	})
}

// SetAdminACL sets the admin's Digest name and H(A1) (DigestPassword is
// base64 of it, docs/protocol.md §6).
func (s *session) SetAdminACL(name, digestPassword string) ptstatus.Code {
	if st := checkUserName(name); st != ptstatus.Success {
		return st
	}
	ha1, err := digest.ParseDigestPassword(digestPassword)
	if err != nil {
		return ptstatus.InvalidPassword
	}
	return s.change(func(m *mebx.Settings) ptstatus.Code {
		if slices.ContainsFunc(m.AMT.Users, func(u mebx.ACLEntry) bool { return u.Name == name }) {
			return ptstatus.Duplicate
		}
		m.AMT.AdminName, m.AMT.AdminHA1 = name, ha1
		return ptstatus.Success
	})
}

func checkUserName(name string) ptstatus.Code {
	if mebx.CheckUserName(name) != nil {
		return ptstatus.InvalidName
	}
	return ptstatus.Success
}

// AddUserACL adds a user with Digest credentials, a Kerberos SID, or both,
// and returns its handle.
func (s *session) AddUserACL(name, digestPassword, sid string, access uint32, realms []uint32) (uint32, ptstatus.Code) {
	e := mebx.ACLEntry{Name: name, KerberosSID: sid, Access: access, Realms: realms}
	if name == "" && sid == "" {
		return 0, ptstatus.InvalidParameter
	}
	if name != "" {
		if st := checkUserName(name); st != ptstatus.Success {
			return 0, st
		}
		ha1, err := digest.ParseDigestPassword(digestPassword)
		if err != nil {
			return 0, ptstatus.InvalidPassword
		}
		e.HA1 = ha1
	}
	if access > 2 {
		return 0, ptstatus.InvalidParameter
	}
	for _, r := range realms {
		if r < mebx.MinRealm || r > mebx.MaxRealm {
			return 0, ptstatus.InvalidRealm
		}
	}
	var handle uint32
	st := s.change(func(m *mebx.Settings) ptstatus.Code {
		if len(m.AMT.Users) >= maxUsers {
			return ptstatus.MaxLimitReached
		}
		for _, u := range m.AMT.Users {
			if name != "" && u.Name == name || sid != "" && u.KerberosSID == sid {
				return ptstatus.Duplicate
			}
			handle = max(handle, u.Handle)
		}
		if name != "" && name == m.AMT.AdminName {
			return ptstatus.Duplicate
		}
		handle++
		e.Handle = handle
		m.AMT.Users = append(m.AMT.Users, e)
		return ptstatus.Success
	})
	return handle, st
}

// RemoveUserACL removes a user by handle.
func (s *session) RemoveUserACL(handle uint32) ptstatus.Code {
	return s.change(func(m *mebx.Settings) ptstatus.Code {
		i := slices.IndexFunc(m.AMT.Users, func(u mebx.ACLEntry) bool { return u.Handle == handle })
		if i < 0 {
			return ptstatus.InvalidHandle
		}
		m.AMT.Users = slices.Delete(m.AMT.Users, i, i+1)
		return ptstatus.Success
	})
}

// Time is AMT's clock: the device clock plus the offset the SCS set.
func (s *session) Time() int64 {
	v := s.view()
	return s.d.rtc().Unix() + v.AMT.ClockOffset
}

// SetTime is SetHighAccuracyTimeSynch: Ta0 must be the value AMT gave out
// (within the slack of one exchange), Tm1 ≤ Tm2 the SCS's clock at its
// send and receive.
func (s *session) SetTime(ta0, tm1, tm2 int64) ptstatus.Code {
	now := s.Time()
	if ta0 > now || now-ta0 > 300 || tm1 > tm2 || tm1 <= 0 {
		return ptstatus.InvalidTime
	}
	return s.change(func(m *mebx.Settings) ptstatus.Code {
		// The SCS's time at our receipt is about Tm2 plus what has passed
		// here since Ta0 minus its own round trip; AMT takes Tm2.
		m.AMT.ClockOffset = tm2 - s.d.rtc().Unix()
		m.AMT.TimeSet = true
		return ptstatus.Success
	})
}

// AddKey adds an RSA private key (PKCS#1 or PKCS#8 DER) and returns its
// InstanceID.
func (s *session) AddKey(der []byte) (string, ptstatus.Code) {
	k, err := parseRSAKey(der)
	if err != nil {
		return "", ptstatus.InvalidKey
	}
	g, err := NewGeneratedKey(k)
	if err != nil {
		return "", ptstatus.InvalidKey
	}
	return s.addKey(g)
}

// GenerateKeyPair makes an RSA key pair in the device (2048 bits; the
// fleet may hand out keys from a pool, Options.KeyPairs).
func (s *session) GenerateKeyPair(alg, bits uint32) (string, ptstatus.Code) {
	if alg != 0 || bits != 2048 {
		return "", ptstatus.InvalidParameter
	}
	g, err := s.d.newKey()
	if err != nil {
		return "", ptstatus.InternalError
	}
	return s.addKey(g)
}

// addKey stores g's encodings in the settings by reference: they are
// never written to after NewGeneratedKey, so the devices of a key pool
// share them.
func (s *session) addKey(g *GeneratedKey) (string, ptstatus.Code) {
	var id string
	st := s.change(func(m *mebx.Settings) ptstatus.Code {
		for _, kp := range m.AMT.Keys {
			if bytes.Equal(kp.DER, g.DER) {
				return ptstatus.Duplicate
			}
		}
		id = nextID(keyIDFormat, len(m.AMT.Keys), func(i int) string { return m.AMT.Keys[i].ID })
		m.AMT.Keys = append(m.AMT.Keys, mebx.KeyPair{ID: id, DER: g.DER, Public: g.Public})
		return ptstatus.Success
	})
	if st == ptstatus.Success {
		s.mu.Lock()
		if s.keys == nil {
			s.keys = make(map[string]*rsa.PrivateKey, 1)
		}
		s.keys[id] = g.Key
		s.mu.Unlock()
	}
	return id, st
}

// The InstanceIDs AMT gives keys and certificates.
const (
	keyIDFormat  = "Intel(r) AMT Key: Handle: %d"
	certIDFormat = "Intel(r) AMT Certificate: Handle: %d"
)

// nextID is the InstanceID in format whose handle is one more than the
// largest of the n in use (id(i) is the i-th).
func nextID(format string, n int, id func(int) string) string {
	h := 0
	for i := range n {
		var v int
		if _, err := fmt.Sscanf(id(i), format, &v); err == nil {
			h = max(h, v)
		}
	}
	return fmt.Sprintf(format, h+1)
}

// AddCertificate adds an X.509 certificate (DER) and returns its
// InstanceID.
func (s *session) AddCertificate(der []byte) (string, ptstatus.Code) {
	if _, err := x509.ParseCertificate(der); err != nil {
		return "", ptstatus.InvalidCert
	}
	var id string
	st := s.change(func(m *mebx.Settings) ptstatus.Code {
		for _, c := range m.AMT.Certs {
			if bytes.Equal(c.DER, der) {
				return ptstatus.Duplicate
			}
		}
		id = nextID(certIDFormat, len(m.AMT.Certs), func(i int) string { return m.AMT.Certs[i].ID })
		m.AMT.Certs = append(m.AMT.Certs, mebx.Certificate{ID: id, DER: der})
		return ptstatus.Success
	})
	return id, st
}

// SetTLSCertificate makes a held certificate the one 16993 serves; its
// key must be held too (AMT_TLSCredentialContext).
func (s *session) SetTLSCertificate(certID string) ptstatus.Code {
	return s.change(func(m *mebx.Settings) ptstatus.Code {
		i := slices.IndexFunc(m.AMT.Certs, func(c mebx.Certificate) bool { return c.ID == certID })
		if i < 0 {
			return ptstatus.InvalidHandle
		}
		if _, err := certKey(&m.AMT, m.AMT.Certs[i].DER); err != nil {
			return ptstatus.CertKeyNotMatch
		}
		m.AMT.TLSCert = certID
		return ptstatus.Success
	})
}

// DeleteCredential removes a certificate (cert) or key pair by InstanceID;
// the one TLS serves with, or its key, is refused (STORAGE_ACL_ENTRY_IN_USE
// is AMT's "in use").
func (s *session) DeleteCredential(cert bool, id string) ptstatus.Code {
	return s.change(func(m *mebx.Settings) ptstatus.Code {
		a := &m.AMT
		if cert {
			i := slices.IndexFunc(a.Certs, func(c mebx.Certificate) bool { return c.ID == id })
			if i < 0 {
				return ptstatus.InvalidHandle
			}
			if a.TLSCert == id {
				return ptstatus.StorageACLEntryInUse
			}
			a.Certs = slices.Delete(a.Certs, i, i+1)
			return ptstatus.Success
		}
		i := slices.IndexFunc(a.Keys, func(k mebx.KeyPair) bool { return k.ID == id })
		if i < 0 {
			return ptstatus.InvalidHandle
		}
		for _, c := range a.Certs {
			if c.ID == a.TLSCert {
				if kp, err := certKey(a, c.DER); err == nil && kp.ID == id {
					return ptstatus.StorageACLEntryInUse
				}
			}
		}
		a.Keys = slices.Delete(a.Keys, i, i+1)
		return ptstatus.Success
	})
}

// ClearTLSCertificate removes the TLS credential context.
func (s *session) ClearTLSCertificate() ptstatus.Code {
	return s.change(func(m *mebx.Settings) ptstatus.Code {
		if m.AMT.TLSCert == "" {
			return ptstatus.NotFound
		}
		m.AMT.TLSCert = ""
		return ptstatus.Success
	})
}

// SetTLS sets AMT_TLSSettingData for the network interface.
func (s *session) SetTLS(enabled, mutual, acceptNonSecure bool) ptstatus.Code {
	return s.change(func(m *mebx.Settings) ptstatus.Code {
		if enabled && m.AMT.TLSCert == "" {
			return ptstatus.CertificateNotReady
		}
		m.AMT.TLSEnabled, m.AMT.TLSMutualAuth, m.AMT.TLSAcceptNonSecure = enabled, mutual, acceptNonSecure
		return ptstatus.Success
	})
}

// SetNames sets the host and domain names (AMT_GeneralSettings).
func (s *session) SetNames(host, domain string) ptstatus.Code {
	return s.change(func(m *mebx.Settings) ptstatus.Code {
		next := *m
		next.HostName, next.DomainName = host, domain
		if err := next.Validate(); err != nil {
			if host != m.HostName {
				return ptstatus.InvalidName
			}
			return ptstatus.InvalidDomainName
		}
		*m = next
		return ptstatus.Success
	})
}

// Kerberos is AMT_KerberosSettingData.
type Kerberos struct {
	Enabled      bool
	Realm        string
	KeyVersion   uint32
	Encryption   uint32
	MasterKey    []byte
	MaxClockSkew uint32
}

// SetKerberos sets the Kerberos settings.
func (s *session) SetKerberos(k Kerberos) ptstatus.Code {
	if k.Enabled && (k.Realm == "" || len(k.MasterKey) != 16) {
		return ptstatus.InvalidParameter
	}
	return s.change(func(m *mebx.Settings) ptstatus.Code {
		a := &m.AMT
		a.KerberosEnabled, a.KerberosRealm, a.KerberosKeyVersion, a.KerberosEncryption = k.Enabled, k.Realm, k.KeyVersion, k.Encryption
		a.KerberosMasterKey, a.KerberosMaxClockSkew = k.MasterKey, k.MaxClockSkew
		return ptstatus.Success
	})
}

// CommitChanges ends setup: the staged settings become the device's,
// persisted in one atomic write, in POST state. After the answer has gone
// out the listeners are re-armed (16993 now serves the certificate) and the
// Hello loop stops.
func (s *session) CommitChanges() ptstatus.Code {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.d.current()
	if s.staged != nil {
		next = *s.staged
	}
	if !s.inSetup(&next) {
		return ptstatus.InvalidProvisioningState
	}
	if next.AMT.TLSEnabled && next.AMT.TLSCert == "" {
		return ptstatus.CertificateNotReady
	}
	next.AMT = next.AMT.Clone()
	next.State = mebx.StatePost
	next.AMT.Audit = &mebx.ProvisioningRecord{Time: s.d.rtc().Unix() + next.AMT.ClockOffset, Peer: s.peer, TLS: s.tls, Session: s.id,
		Method: s.method()}
	if s.pki != nil {
		next.AMT.Audit.CertCN, next.AMT.Audit.CertRoot = s.pki.CN, s.pki.RootName+" "+s.pki.RootHash
	}
	if err := s.d.persist(next); err != nil {
		s.d.emit(event.CommitFailed, "err", err.Error())
		return flashStatus(err)
	}
	s.staged, s.committed, s.over = nil, true, true
	s.after = s.d.rearm
	s.d.primeTLS(&next, s.keys)
	s.d.emit(event.Provisioned, "session", s.id, "peer", s.peer, "method", s.method(), "tls", next.AMT.TLSEnabled, "users", len(next.AMT.Users),
		"changes", s.changes)
	return ptstatus.Success
}

// Unprovision returns the device to factory settings (full: AMT settings
// and PID/PPS cleared, MEBx password kept) or, for PartialUnprovision, to
// setup with the admin ACL, PID/PPS, names and SCS address kept.
func (s *session) Unprovision(partial bool) ptstatus.Code {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.d.current()
	if cur.State == mebx.StatePre {
		return ptstatus.InvalidProvisioningState
	}
	next := mebx.Defaults()
	// The TLS PKI menu is MEBx's, not the SCS's: it survives (Intel: hashes
	// an OEM or IT added outlive a return to factory state).
	next.PKI = cur.PKI.Clone()
	next.Password = cur.Password
	next.AMTEnabled = cur.AMTEnabled
	next.Mode = cur.Mode
	next.FlashWrites = cur.FlashWrites
	next.DHCP, next.IP, next.Netmask, next.Gateway, next.DNS1, next.DNS2 = cur.DHCP, cur.IP, cur.Netmask, cur.Gateway, cur.DNS1, cur.DNS2
	if partial {
		next.State = mebx.StateIn
		next.PID, next.PPS = cur.PID, cur.PPS
		next.HostName, next.DomainName = cur.HostName, cur.DomainName
		next.SCSAddress, next.SCSPort, next.SCSFQDN = cur.SCSAddress, cur.SCSPort, cur.SCSFQDN
		next.AMT.AdminName, next.AMT.AdminHA1 = cur.AMT.AdminName, slices.Clone(cur.AMT.AdminHA1)
		if next.PID == "" {
			next.State = mebx.StatePre
		}
	}
	if err := s.d.persist(next); err != nil {
		return flashStatus(err)
	}
	s.staged, s.over = nil, true
	s.after = s.d.rearm
	s.d.emit(event.Unprovisioned, "partial", partial, "state", next.State.String())
	return ptstatus.Success
}

func flashStatus(err error) ptstatus.Code {
	if errors.Is(err, errFlashWorn) {
		return ptstatus.FlashWriteLimitExceeded
	}
	return ptstatus.InternalError
}

// parseRSAKey reads PKCS#1 or PKCS#8 DER.
func parseRSAKey(der []byte) (*rsa.PrivateKey, error) {
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, errors.New("not an RSA key")
	}
	return rk, nil
}

// certKey finds the held key pair that matches a certificate, by public
// key; the private key stays unparsed.
func certKey(a *mebx.AMTSettings, certDER []byte) (*mebx.KeyPair, error) {
	c, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, err
	}
	pub, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("certificate key is not RSA")
	}
	want := x509.MarshalPKCS1PublicKey(pub)
	for i := range a.Keys {
		if bytes.Equal(publicOf(&a.Keys[i]), want) {
			return &a.Keys[i], nil
		}
	}
	return nil, errors.New("no held key matches the certificate")
}

// publicOf is a held key's PKCS#1 public key (parsed from the private key
// for stores written before it was kept).
func publicOf(kp *mebx.KeyPair) []byte {
	if kp.Public != nil {
		return kp.Public
	}
	k, err := parseRSAKey(kp.DER)
	if err != nil {
		return nil
	}
	return x509.MarshalPKCS1PublicKey(&k.PublicKey)
}

// primeTLS builds the certificate 16993 will serve from a key this session
// already holds parsed, sparing the first handshake a key parse.
func (d *Device) primeTLS(s *mebx.Settings, keys map[string]*rsa.PrivateKey) {
	if !s.AMT.TLSEnabled || len(keys) == 0 {
		return
	}
	for _, c := range s.AMT.Certs {
		if c.ID != s.AMT.TLSCert {
			continue
		}
		kp, err := certKey(&s.AMT, c.DER)
		if err != nil || keys[kp.ID] == nil {
			return
		}
		cert := tls.Certificate{Certificate: [][]byte{c.DER}, PrivateKey: keys[kp.ID]}
		d.mu.Lock()
		d.tlsCert, d.tlsCertID = &cert, c.ID
		d.mu.Unlock()
		return
	}
}

// newKey makes a key pair: from Options.KeyPairs when set, else a fresh
// RSA-2048 key.
func (d *Device) newKey() (*GeneratedKey, error) {
	if d.o.KeyPairs != nil {
		return d.o.KeyPairs()
	}
	return generateKey()
}

// GeneratedKey is a key pair GenerateKeyPair hands out, with the two
// encodings the device stores, made once: the devices a pool gives one key
// share its encodings rather than each keeping 1.5 KB of its own (a
// fleet's pool has two keys by default).
type GeneratedKey struct {
	Key    *rsa.PrivateKey
	DER    []byte // PKCS#8 private key; read only
	Public []byte // PKCS#1 public key; read only
}

// NewGeneratedKey encodes k.
func NewGeneratedKey(k *rsa.PrivateKey) (*GeneratedKey, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("firmware: encoding a key pair: %w", err)
	}
	return &GeneratedKey{Key: k, DER: der, Public: x509.MarshalPKCS1PublicKey(&k.PublicKey)}, nil
}

// generateKey makes a fresh RSA-2048 key pair.
func generateKey() (*GeneratedKey, error) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("firmware: generating a key pair: %w", err)
	}
	return NewGeneratedKey(k)
}

// errFlashWorn is the flash wear-out quirk's refusal.
var errFlashWorn = errors.New("flash write limit exceeded")

// KeyPool returns a source for Options.KeyPairs that makes at most size
// RSA-2048 keys, each when first needed, and then hands them out in turn:
// a fleet pays for size keys rather than one per device. Devices then
// share keys, which no real fleet does; a fidelity trade for load tests.
func KeyPool(size int) func() (*GeneratedKey, error) {
	var mu sync.Mutex
	keys := make([]*GeneratedKey, 0, size)
	making, next := 0, 0
	return func() (*GeneratedKey, error) {
		mu.Lock()
		if len(keys)+making < size {
			// Made outside the lock, so that callers may fill the pool in
			// parallel.
			making++
			mu.Unlock()
			k, err := generateKey()
			mu.Lock()
			defer mu.Unlock()
			making--
			if err != nil {
				return nil, err
			}
			keys = append(keys, k)
			return k, nil
		}
		if len(keys) == 0 {
			// Every slot is being made by another caller: make one more
			// rather than wait.
			mu.Unlock()
			return generateKey()
		}
		defer mu.Unlock()
		k := keys[next%len(keys)]
		next++
		return k, nil
	}
}
