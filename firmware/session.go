package firmware

import (
	"bytes"
	"crypto/md5"
	"crypto/rsa"
	"encoding/hex"
	"strings"
	"sync"

	"github.com/amtsim/amtsim/digest"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/ptstatus"
	"github.com/amtsim/amtsim/wsman"
)

// session is one connection to an AMT port: who logged in on it and what
// it has changed. Changes are staged in a copy of the settings until
// CommitChanges; a connection that ends first takes them with it
// (docs/protocol.md §7).
type session struct {
	d    *Device
	id   uint64
	port uint16
	peer string
	tls  bool
	pki  *pkiPeer // set when the SCS logged in with a provisioning certificate

	mu        sync.Mutex
	user      string
	admin     bool
	realms    []uint32       // a user's realms (the admin's are all)
	staged    *mebx.Settings // nil until the first change
	changes   int
	committed bool
	holding   bool // counted in d.sessions: holds the Hello loop
	ws        *wsman.Server
	out       bytes.Buffer               // the WS-MAN answer being written; reused per request
	keys      map[string]*rsa.PrivateKey // parsed keys added this session, by InstanceID
	after     func()                     // runs once the connection is done (re-arming the ports)
	over      bool                       // committed or unprovisioned: serve no more requests
}

// answerBuffer empties the session's answer buffer for the next answer.
// It starts at 4 KB, which the answers of a provisioning fit, rather than
// growing (a copy each time) through the first few.
func (s *session) answerBuffer() *bytes.Buffer {
	s.out.Reset()
	if s.out.Cap() < answerBufMin {
		s.out.Grow(answerBufMin)
	}
	return &s.out
}

const answerBufMin = 4 << 10

// view is what this session sees: its staged settings, or the device's.
func (s *session) view() mebx.Settings {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.staged != nil {
		return *s.staged
	}
	return s.d.current()
}

// change applies f to the settings. In setup the result is staged until
// CommitChanges; in any other state it is the device's at once, persisted
// (AMT stages only during provisioning). f returns a status; a non-success
// status changes nothing.
func (s *session) change(f func(*mebx.Settings) ptstatus.Code) ptstatus.Code {
	s.mu.Lock()
	defer s.mu.Unlock()
	var next mebx.Settings
	if s.staged != nil {
		next = *s.staged
	} else {
		next = s.d.current()
	}
	next.AMT = next.AMT.Clone()
	if st := f(&next); st != ptstatus.Success {
		return st
	}
	if !s.inSetup(&next) && s.staged == nil {
		if err := s.d.persist(next); err != nil {
			return flashStatus(err)
		}
		s.after = s.d.rearm
		return ptstatus.Success
	}
	s.staged = &next
	s.changes++
	return ptstatus.Success
}

// inSetup reports whether m is setup for this session, where changes are
// staged until CommitChanges: setup mode, or, for an SCS that logged in
// with a provisioning certificate, the factory state remote configuration
// provisions from.
func (s *session) inSetup(m *mebx.Settings) bool {
	return m.State == mebx.StateIn || s.pki != nil && m.State == mebx.StatePre
}

// realmFor derives a device's Digest realm from its identity: stable for
// the device, different between devices, and in AMT's form.
func realmFor(uuid [16]byte) string {
	h := md5.Sum(append([]byte("amtsim realm "), uuid[:]...))
	return "Digest:" + strings.ToUpper(hex.EncodeToString(h[:]))
}

// lookupUser returns a user's H(A1) under settings s: in setup and factory
// the admin logs in as "admin" with the MEBx password; once provisioned,
// with the admin ACL entry if one was set, and users with theirs.
//
// pki is a session whose SCS proved itself with a provisioning
// certificate. On a device whose MEBx password is still the factory's, such
// an SCS logs in as admin with an empty password (MED: the factory
// password is never valid on the network, and MeshCentral's bare-metal
// activation, written and run against real AMT by its Intel authors, logs
// in so; docs/protocol.md §11).
func lookupUser(s *mebx.Settings, realm, user string, pki bool) (ha1 []byte, admin bool, realms []uint32, ok bool) {
	if s.AMT.AdminName != "" {
		if user == s.AMT.AdminName {
			return s.AMT.AdminHA1, true, nil, true
		}
	} else if user == "admin" {
		if pki && s.State != mebx.StatePost && !s.PasswordChanged() {
			return digest.HA1("admin", realm, ""), true, nil, true
		}
		return digest.HA1("admin", realm, s.Password), true, nil, true
	}
	for _, u := range s.AMT.Users {
		if u.Name != "" && u.Name == user && u.HA1 != nil {
			return u.HA1, false, u.Realms, true
		}
	}
	return nil, false, nil, false
}

// method names how the session's SCS proved itself (ProvisioningRecord).
func (s *session) method() string {
	switch {
	case s.pki != nil:
		return "pki"
	case s.tls:
		return "psk"
	}
	return "digest"
}
