package nic

import (
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The table learns in place, keeps at most arpMaxSize entries (the
// oldest goes), forgets all on a new own address, and drops its pending
// slice with the last address that waited.
func TestARPTable(t *testing.T) {
	var tab arpTable
	tab.setOwn(netip.MustParseAddr("10.0.0.9"))
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}) }
	mac := func(i int) [6]byte { return [6]byte{2, 0, 0, 0, byte(i >> 8), byte(i)} }

	tab.learnLocked(ip(1), mac(1))
	tab.learnLocked(ip(2), mac(2))
	tab.learnLocked(ip(1), mac(7))
	require.Len(t, tab.entries, 2, "a known address is updated, not added")
	assert.Equal(t, mac(7), tab.entry(ip(1)).mac)
	assert.Equal(t, mac(2), tab.entry(ip(2)).mac)
	assert.Nil(t, tab.entry(ip(3)))

	// Full: the oldest goes, whatever its place.
	for i := 3; i <= arpMaxSize; i++ {
		tab.learnLocked(ip(i), mac(i))
	}
	require.Len(t, tab.entries, arpMaxSize)
	tab.entry(ip(2)).at = time.Now().Add(-time.Hour)
	tab.learnLocked(ip(1000), mac(1000))
	assert.Len(t, tab.entries, arpMaxSize)
	assert.Nil(t, tab.entry(ip(2)), "the oldest went")
	assert.NotNil(t, tab.entry(ip(1)))
	assert.Equal(t, mac(1000), tab.entry(ip(1000)).mac)

	tab.pending = append(tab.pending, &arpPending{ip: ip(5), timer: time.NewTimer(time.Hour)}, &arpPending{ip: ip(6), timer: time.NewTimer(time.Hour)})
	assert.Equal(t, ip(6), tab.waiting(ip(6)).ip)
	tab.unwait(ip(5))
	assert.Nil(t, tab.waiting(ip(5)))
	require.Len(t, tab.pending, 1)
	tab.unwait(ip(6))
	assert.Nil(t, tab.pending, "no slice kept for nothing")

	tab.pending = append(tab.pending, &arpPending{ip: ip(5), timer: time.NewTimer(time.Hour)})
	tab.setOwn(netip.MustParseAddr("10.0.0.10"))
	assert.Nil(t, tab.entries)
	assert.Nil(t, tab.pending)
}
