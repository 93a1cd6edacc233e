package digest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// AMT's backoff: ten wrong logins in a row block every login, the right
// one too, for 5 s; further failures double the block up to 80 s; an hour
// without a failure resets it; a success ends a run.
func TestLockout(t *testing.T) {
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	s := NewServer(ServerOptions{Realm: realm, Now: clk.now})
	lookup := users("admin", "P@ssw0rd")
	login := func(password string) error {
		ch, err := s.Challenge(false)
		require.NoError(t, err)
		c := &Client{Username: "admin", Password: password}
		require.NoError(t, c.Observe(ch.String()))
		return s.Verify(authorize(t, c, "POST", "/wsman"), "POST", "/wsman", lookup)
	}
	for range 9 {
		require.ErrorIs(t, login("wrong"), ErrBadResponse)
	}
	require.NoError(t, login("P@ssw0rd"), "nine failures do not block")
	for range 10 {
		require.ErrorIs(t, login("wrong"), ErrBadResponse)
	}
	assert.ErrorIs(t, login("P@ssw0rd"), ErrLocked, "the tenth in a row blocks the right password too")
	clk.t = clk.t.Add(5 * time.Second)
	require.ErrorIs(t, login("wrong"), ErrBadResponse, "the block is over after 5 s")
	for _, want := range []time.Duration{10, 20, 40, 80, 80} {
		_, until := s.Locked()
		assert.Equal(t, want*time.Second, until.Sub(clk.t), "a continuing attack doubles the block up to 80 s")
		clk.t = until
		require.ErrorIs(t, login("wrong"), ErrBadResponse)
	}
	clk.t = clk.t.Add(time.Hour + 81*time.Second)
	require.NoError(t, login("P@ssw0rd"), "an hour without an attack resets it")
	for range 9 {
		require.ErrorIs(t, login("wrong"), ErrBadResponse)
	}
	locked, _ := s.Locked()
	assert.False(t, locked, "the run starts again at zero")

	off := NewServer(ServerOptions{Realm: realm, Now: clk.now, Lockout: Lockout{Disabled: true}})
	s = off
	for range 30 {
		require.ErrorIs(t, login("wrong"), ErrBadResponse)
	}
	require.NoError(t, login("P@ssw0rd"), "no backoff when disabled")
}

// Four clients fetching challenges at once do not push each other's
// nonces out: a login that took its challenge first still passes after
// the others have taken theirs (60 more).
func TestConcurrentLoginsKeepTheirNonces(t *testing.T) {
	s, legit := challenged(t, ServerOptions{}, "P@ssw0rd")
	others := make([]*Client, 3)
	for i := range others {
		others[i] = &Client{Username: "admin", Password: "P@ssw0rd"}
		for range 20 {
			ch, err := s.Challenge(false)
			require.NoError(t, err)
			require.NoError(t, others[i].Observe(ch.String()))
		}
	}
	lookup := users("admin", "P@ssw0rd")
	require.NoError(t, s.Verify(authorize(t, legit, "POST", "/wsman"), "POST", "/wsman", lookup))
	for _, c := range others {
		require.NoError(t, s.Verify(authorize(t, c, "POST", "/wsman"), "POST", "/wsman", lookup))
	}
}
