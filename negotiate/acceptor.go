package negotiate

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/flags"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/types"
)

// The reasons a ticket is refused. Each is wrapped with what was seen; the
// device counts them and logs the reason, never the token.
var (
	ErrNotConfigured = errors.New("negotiate: Kerberos is not configured")
	ErrEType         = errors.New("negotiate: ticket not encrypted with RC4-HMAC")
	ErrRealm         = errors.New("negotiate: ticket of another realm")
	ErrKey           = errors.New("negotiate: ticket does not open with the device's key")
	ErrNotYetValid   = errors.New("negotiate: ticket not yet valid")
	ErrExpired       = errors.New("negotiate: ticket expired")
	ErrAuthenticator = errors.New("negotiate: authenticator does not open with the ticket's session key")
	ErrClient        = errors.New("negotiate: authenticator names another client than the ticket")
	ErrSkew          = errors.New("negotiate: clock skew beyond the tolerance")
	ErrReplay        = errors.New("negotiate: authenticator replayed")
	ErrPAC           = errors.New("negotiate: PAC refused")
)

// Settings are the device's Kerberos settings (AMT_KerberosSettingData).
type Settings struct {
	Realm string
	// MasterKey is the 16-byte RC4-HMAC service key.
	MasterKey []byte
	// MaxClockSkew bounds the difference between the ME's clock and the
	// authenticator's time, and the slack on the ticket's start and end.
	MaxClockSkew time.Duration
}

// Identity is the client a ticket proved.
type Identity struct {
	// Principal is name@REALM of the ticket's client.
	Principal string
	// SIDs are the client's SID first, then its groups' (from the PAC), or
	// the one SID PrincipalSID gives where the PAC has no logon
	// information.
	SIDs []SID
	// FromPAC says whether SIDs came from the PAC.
	FromPAC bool
}

// maxReplay bounds the replay cache: an AMT device serves a handful of
// consoles, and one that sends more distinct authenticators than this
// inside the tolerance is refused (fail closed) until old ones age out.
const maxReplay = 4096

// Acceptor accepts AP-REQs for one device. Its replay cache is the
// device's own, as the firmware's is: an authenticator seen once inside
// the tolerance is refused the second time. It is safe for concurrent use.
type Acceptor struct {
	mu   sync.Mutex
	seen map[replayKey]time.Time // authenticator → when it may be forgotten
}

type replayKey struct {
	client string
	ctime  int64 // authenticator ctime in microseconds
}

// Accept checks an AP-REQ against the device's settings at the ME's time
// now, in the order RFC 4120 §3.2.3 gives: the ticket (realm, etype, key,
// times), then the authenticator (session key, client, time), then the
// replay cache, then the PAC. The AP-REQ is decrypted in place.
func (a *Acceptor) Accept(req *messages.APReq, s Settings, now time.Time) (Identity, error) {
	if len(s.MasterKey) != 16 || s.Realm == "" {
		return Identity{}, ErrNotConfigured
	}
	t := &req.Ticket
	if !strings.EqualFold(t.Realm, s.Realm) {
		return Identity{}, fmt.Errorf("%w: %q, the device is in %q", ErrRealm, t.Realm, s.Realm)
	}
	if t.EncPart.EType != etypeID.RC4_HMAC {
		return Identity{}, fmt.Errorf("%w: etype %d", ErrEType, t.EncPart.EType)
	}
	key := types.EncryptionKey{KeyType: etypeID.RC4_HMAC, KeyValue: s.MasterKey}
	if err := t.Decrypt(key); err != nil {
		return Identity{}, fmt.Errorf("%w (%s)", ErrKey, t.SName.PrincipalNameString())
	}
	enc := &t.DecryptedEncPart
	skew := s.MaxClockSkew
	if !enc.StartTime.IsZero() && enc.StartTime.Sub(now) > skew || types.IsFlagSet(&enc.Flags, flags.Invalid) {
		return Identity{}, fmt.Errorf("%w: starts %s, the ME's clock says %s", ErrNotYetValid, enc.StartTime.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if now.Sub(enc.EndTime) > skew {
		return Identity{}, fmt.Errorf("%w: ended %s, the ME's clock says %s", ErrExpired, enc.EndTime.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if err := req.DecryptAuthenticator(enc.Key); err != nil {
		return Identity{}, ErrAuthenticator
	}
	au := &req.Authenticator
	if !au.CName.Equal(enc.CName) || !strings.EqualFold(au.CRealm, enc.CRealm) {
		return Identity{}, ErrClient
	}
	ctime := au.CTime.Add(time.Duration(au.Cusec) * time.Microsecond)
	if d := now.Sub(ctime); d > skew || -d > skew {
		return Identity{}, fmt.Errorf("%w: authenticator is %s from the ME's clock, tolerance %s", ErrSkew, d.Round(time.Second), skew)
	}
	client := enc.CName.PrincipalNameString() + "@" + enc.CRealm
	if err := a.remember(replayKey{client: client, ctime: ctime.UnixMicro()}, now, skew); err != nil {
		return Identity{}, err
	}
	id := Identity{Principal: client}
	sids, ok, err := pacSIDs(enc, key)
	switch {
	case err != nil:
		return Identity{}, fmt.Errorf("%w: %v", ErrPAC, err)
	case ok:
		id.SIDs, id.FromPAC = sids, true
	default:
		id.SIDs = []SID{PrincipalSID(enc.CName.PrincipalNameString(), enc.CRealm)}
	}
	return id, nil
}

// remember records an authenticator, refusing one already seen. Entries
// live for twice the tolerance: an authenticator older than that fails
// the skew check before it reaches the cache.
func (a *Acceptor) remember(k replayKey, now time.Time, skew time.Duration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if until, ok := a.seen[k]; ok && now.Before(until) {
		return fmt.Errorf("%w: by %s", ErrReplay, k.client)
	}
	// Aged entries go at every 64th entry, so that a device that served
	// a burst once does not keep it.
	if n := len(a.seen); n >= 64 && n%64 == 0 || n >= maxReplay {
		for key, until := range a.seen {
			if !now.Before(until) {
				delete(a.seen, key)
			}
		}
		if len(a.seen) >= maxReplay {
			return fmt.Errorf("%w: %d authenticators inside the tolerance, the cache is full", ErrReplay, len(a.seen))
		}
	}
	if a.seen == nil {
		a.seen = map[replayKey]time.Time{}
	}
	a.seen[k] = now.Add(2 * skew)
	return nil
}
