package scs

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/identity"
)

// pidDraw is what identity.NewPIDPPS reads to draw pid (7 characters and
// its checksum), with a PPS of zeros.
func pidDraw(pid string) io.Reader {
	b := make([]byte, 31)
	for i := range 7 {
		b[i] = byte(strings.IndexByte("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", pid[i]))
	}
	return bytes.NewReader(b)
}

// The new PID a session draws is neither another record's, nor the
// device's own, nor the factory PID of a device of the fleet's seed that
// the database does not hold yet (another shard): a draw that is any of
// these is drawn again and counted, and the other record is untouched.
func TestNewPIDIsNoOtherRecords(t *testing.T) {
	db, err := OpenDB(filepath.Join(t.TempDir(), "scs.db"))
	require.NoError(t, err)
	defer db.Close()
	generate(t, db, 7, []int{0}, 2, "Ready-Pass1!")
	all := db.All()
	a, b := all[0], all[1]
	later, err := identity.Of(7, 5, 9)
	require.NoError(t, err)

	noDevice := errors.New("no device here")
	s, err := NewServer(ServerOptions{DB: db, NoTLS: true, Profile: DefaultProfile("amtsim.example"),
		Rand: io.MultiReader(pidDraw(b.PID), pidDraw(a.PID), pidDraw(later.PID), rand.Reader),
		Dial: func(context.Context, string, string) (net.Conn, error) { return nil, noDevice }})
	require.NoError(t, err)
	s.Start(context.Background())
	defer s.Stop()

	err = s.provision(job{pid: a.PID, rec: a.PID, addr: netip.MustParseAddr("127.0.0.1")})
	require.ErrorIs(t, err, noDevice, "the session got as far as the device")
	assert.Equal(t, uint64(3), s.Stats.Redrawn.Load())
	got, ok := db.Get(b.PID)
	require.True(t, ok)
	assert.Equal(t, b, got, "b is still found by its PID")
	ra, ok := db.Get(a.PID)
	require.True(t, ok)
	require.NotEmpty(t, ra.NewPID)
	assert.NotContains(t, []string{a.PID, b.PID, later.PID}, ra.NewPID)
	byNew, _ := db.Get(ra.NewPID)
	assert.Equal(t, a.PID, byNew.PID)
}

// The SCS has its database's writes wait for each other only while
// devices wait for a worker (DB.GatherWhile).
func TestServerGathersWritesOnlyWhenBehind(t *testing.T) {
	db, err := OpenDB(filepath.Join(t.TempDir(), "scs.db"))
	require.NoError(t, err)
	defer db.Close()
	s, err := NewServer(ServerOptions{DB: db, NoTLS: true, Profile: DefaultProfile("amtsim.example"), Queue: 4})
	require.NoError(t, err)
	db.mu.Lock()
	busy := db.busy
	db.mu.Unlock()
	require.NotNil(t, busy)
	assert.False(t, busy(), "an empty queue")
	s.queue <- job{pid: "waiting"}
	assert.True(t, busy(), "a device waiting for a worker")
}
