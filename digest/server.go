package digest

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	// Realm is the device's realm, "Digest:<32 upper-case hex>".
	Realm string
	// NonceLifetime is how long a nonce is good for; after it a correct
	// response gets stale=true. Default 5 minutes.
	NonceLifetime time.Duration
	// MaxNonces bounds the nonces remembered at once (used ones go first,
	// then the oldest); default 64, so that several clients logging in at
	// once keep theirs. A forgotten nonce counts as expired.
	MaxNonces int
	// Lockout is the backoff after repeated failures; the zero value is
	// AMT's (DefaultLockout).
	Lockout Lockout
	// Now is the server's clock; default time.Now.
	Now func() time.Time
	// Rand makes nonces; default crypto/rand.
	Rand io.Reader
	// AllowEmptyResponse reproduces CVE-2017-5689: the firmware compared
	// only as many characters as the client sent, so an empty response
	// passed for any known user. A quirk for reproducing that bug; never
	// the default.
	AllowEmptyResponse bool
}

// Lockout is the login backoff: after After failures in a row every login
// is refused for First, doubling at each further failure up to Max; Reset
// without a failure clears it.
type Lockout struct {
	After      int
	First, Max time.Duration
	Reset      time.Duration
	Disabled   bool
}

// DefaultLockout is AMT's, as Intel's provisioning guide describes it
// (quoted on Intel's forum, topic 284855): ten successive failures block
// logins for 5 s, growing to 80 s under a continuing attack, reset after
// an hour without one.
var DefaultLockout = Lockout{After: 10, First: 5 * time.Second, Max: 80 * time.Second, Reset: time.Hour}

// Server issues challenges and checks responses for one realm. It is safe
// for concurrent use.
type Server struct {
	o      ServerOptions
	mu     sync.Mutex
	nonces map[string]*nonceState

	// The backoff: failures in a row, when the last was, the period of
	// the last block and when the block ends.
	failures    int
	lastFailure time.Time
	period      time.Duration
	lockedUntil time.Time
}

type nonceState struct {
	issued time.Time
	nc     uint64 // the highest count accepted so far
}

// NewServer returns a Server for o.Realm.
func NewServer(o ServerOptions) *Server {
	if o.NonceLifetime <= 0 {
		o.NonceLifetime = 5 * time.Minute
	}
	if o.MaxNonces <= 0 {
		o.MaxNonces = 64
	}
	if o.Lockout == (Lockout{}) {
		o.Lockout = DefaultLockout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	return &Server{o: o}
}

// Realm is the server's realm.
func (s *Server) Realm() string { return s.o.Realm }

// Challenge issues a fresh nonce; stale marks the answer to a correct
// response with an expired nonce.
func (s *Server) Challenge(stale bool) (*Challenge, error) {
	var b [16]byte
	if _, err := io.ReadFull(s.o.Rand, b[:]); err != nil {
		return nil, fmt.Errorf("digest: nonce: %w", err)
	}
	n := hex.EncodeToString(b[:])
	now := s.o.Now()
	s.mu.Lock()
	if s.nonces == nil {
		s.nonces = make(map[string]*nonceState, 1)
	}
	if len(s.nonces) >= s.o.MaxNonces {
		s.evictLocked(now)
	}
	s.nonces[n] = &nonceState{issued: now}
	s.mu.Unlock()
	return &Challenge{Realm: s.o.Realm, Nonce: n, QOP: "auth", Stale: stale}, nil
}

// evictLocked drops expired nonces; if none has, the oldest used one (its
// client has logged in and can take another), else the oldest.
func (s *Server) evictLocked(now time.Time) {
	var oldest, oldestUsed string
	var at, atUsed time.Time
	for k, v := range s.nonces {
		if now.Sub(v.issued) > s.o.NonceLifetime {
			delete(s.nonces, k)
			continue
		}
		if oldest == "" || v.issued.Before(at) {
			oldest, at = k, v.issued
		}
		if v.nc > 0 && (oldestUsed == "" || v.issued.Before(atUsed)) {
			oldestUsed, atUsed = k, v.issued
		}
	}
	if len(s.nonces) >= s.o.MaxNonces {
		if oldestUsed != "" {
			oldest = oldestUsed
		}
		delete(s.nonces, oldest)
	}
}

// Locked reports whether logins are blocked now, and until when.
func (s *Server) Locked() (bool, time.Time) {
	now := s.o.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	return now.Before(s.lockedUntil), s.lockedUntil
}

// failed counts a failed login and blocks logins when the run of them
// is long enough.
func (s *Server) failed(now time.Time) {
	l := s.o.Lockout
	if l.Disabled {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.lastFailure) > l.Reset {
		s.failures, s.period = 0, 0
	}
	s.lastFailure = now
	s.failures++
	if s.failures < l.After && s.period == 0 {
		return
	}
	// The tenth failure blocks for First; under a continuing attack each
	// further one blocks for twice as long, up to Max.
	if s.period == 0 {
		s.period = l.First
	} else {
		s.period = min(2*s.period, l.Max)
	}
	s.lockedUntil = now.Add(s.period)
}

// succeeded ends a run of failures.
func (s *Server) succeeded() {
	s.mu.Lock()
	s.failures, s.period = 0, 0
	s.mu.Unlock()
}

// Verify checks credentials a for a request (method, uri). ha1 looks up a
// user's H(A1); it returns false for an unknown user. On success Verify
// returns nil and the nonce count is recorded, so the same response is
// refused next time. The error wraps one of the Err values.
func (s *Server) Verify(a *Authorization, method, uri string, ha1 func(user string) ([]byte, bool)) error {
	if a == nil {
		return ErrNoCredentials
	}
	if locked, until := s.Locked(); locked {
		return fmt.Errorf("%w (for %v more)", ErrLocked, until.Sub(s.o.Now()).Round(time.Second))
	}
	err := s.verify(a, method, uri, ha1)
	switch {
	case err == nil:
		s.succeeded()
	case errors.Is(err, ErrBadResponse), errors.Is(err, ErrUnknownUser), errors.Is(err, ErrEmptyResponse), errors.Is(err, ErrReplay):
		s.failed(s.o.Now())
	}
	return err
}

func (s *Server) verify(a *Authorization, method, uri string, ha1 func(user string) ([]byte, bool)) error {
	if a.Realm != s.o.Realm {
		return fmt.Errorf("%w: %q", ErrRealm, clip(a.Realm))
	}
	if a.URI != uri {
		return fmt.Errorf("%w: %q for %q", ErrURI, clip(a.URI), clip(uri))
	}
	if a.QOP != "auth" {
		return fmt.Errorf("%w, got %q", ErrQOP, clip(a.QOP))
	}
	if a.Algorithm != "" && a.Algorithm != "MD5" {
		return fmt.Errorf("%w: algorithm %q", ErrBadResponse, clip(a.Algorithm))
	}
	nc, err := strconv.ParseUint(a.NC, 16, 32)
	if err != nil || len(a.NC) != 8 || nc == 0 {
		return fmt.Errorf("%w: nc %q is not 8 hex digits above 0", ErrBadResponse, clip(a.NC))
	}
	key, ok := ha1(a.Username)
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownUser, clip(a.Username))
	}
	switch {
	case a.Response == "" && s.o.AllowEmptyResponse:
		// The CVE-2017-5689 quirk: accepted without a check.
	case a.Response == "":
		return ErrEmptyResponse
	default:
		want := response(key, method, uri, a.Nonce, a.NC, a.CNonce, a.QOP)
		if subtle.ConstantTimeCompare([]byte(want), []byte(a.Response)) != 1 {
			return ErrBadResponse
		}
	}
	now := s.o.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.nonces[a.Nonce]
	if !ok || now.Sub(st.issued) > s.o.NonceLifetime {
		delete(s.nonces, a.Nonce)
		return ErrStale
	}
	if nc <= st.nc {
		return fmt.Errorf("%w: nc %08x after %08x", ErrReplay, nc, st.nc)
	}
	st.nc = nc
	return nil
}
