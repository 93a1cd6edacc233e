package identity

import (
	"crypto/rand"
	mrand "math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestIntelExamplePair(t *testing.T) {
	pid, err := NormalizePID("0000-037M")
	require.NoError(t, err)
	assert.Equal(t, "0000037M", pid)
	pps, err := NormalizePPS("NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ")
	require.NoError(t, err)
	assert.Equal(t, "NKLDG5DCRRNQE9YZZIJL7LFLVJED69XJ", pps)
	assert.Equal(t, "NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ", Dashed(pps))
}

func TestBadPIDPPSRejected(t *testing.T) {
	for _, s := range []string{"0000-037N", "0000037", "0000-03!M", ""} {
		_, err := NormalizePID(s)
		assert.ErrorIs(t, err, ErrPIDFormat, s)
	}
	for _, s := range []string{
		"NKLD-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XK", // last group checksum
		"NKLE-G5DC-RRNQ-E9YZ-ZIJL-7LFL-VJED-69XJ", // first group checksum
		"NKLD-G5DC",
	} {
		_, err := NormalizePPS(s)
		assert.ErrorIs(t, err, ErrPPSFormat, s)
	}
}

func TestDeterministic(t *testing.T) {
	a, err := Of(42, 3, 1234)
	require.NoError(t, err)
	b, err := Of(42, 3, 1234)
	require.NoError(t, err)
	assert.Equal(t, a, b)
	c, err := Of(43, 3, 1234)
	require.NoError(t, err)
	assert.NotEqual(t, a.MAC, c.MAC, "another seed is another fleet")
	assert.NotEqual(t, a.PPS, c.PPS)
}

func TestUniqueAcrossShardsAndValid(t *testing.T) {
	macs := map[string]bool{}
	pids := map[string]bool{}
	uuids := map[UUID]bool{}
	tags := map[string]bool{}
	for shard := range 3 {
		for index := range 20000 {
			id, err := Of(7, shard, index)
			require.NoError(t, err)
			require.False(t, macs[id.MAC.String()], "MAC collision at %d/%d", shard, index)
			require.False(t, pids[id.PID], "PID collision at %d/%d", shard, index)
			require.False(t, uuids[id.UUID], "UUID collision at %d/%d", shard, index)
			require.False(t, tags[id.ServiceTag], "service tag collision at %d/%d", shard, index)
			macs[id.MAC.String()], pids[id.PID], uuids[id.UUID], tags[id.ServiceTag] = true, true, true, true
			if index%997 == 0 {
				_, err = NormalizePID(id.PID)
				require.NoError(t, err)
				_, err = NormalizePPS(id.PPS)
				require.NoError(t, err)
				require.Zero(t, id.MAC[0]&0x03, "unicast, globally administered")
			}
		}
	}
}

func TestRange(t *testing.T) {
	_, err := Of(1, MaxShards, 0)
	assert.Error(t, err)
	_, err = Of(1, 0, MaxIndex)
	assert.Error(t, err)
	_, err = Of(1, -1, 0)
	assert.Error(t, err)
}

func TestUUIDSMBIOSOrder(t *testing.T) {
	// The example Hello header in docs/protocol.md: bytes 4b529b93 d413 181d ... are
	// UUID 939b524b-13d4-1d18-e487-1c697a6b7a2b.
	raw := [16]byte{0x4b, 0x52, 0x9b, 0x93, 0xd4, 0x13, 0x18, 0x1d, 0xe4, 0x87, 0x1c, 0x69, 0x7a, 0x6b, 0x7a, 0x2b}
	u := UUIDFromSMBIOS(raw)
	assert.Equal(t, "939B524B-13D4-1D18-E487-1C697A6B7A2B", u.String())
	assert.Equal(t, raw, u.SMBIOSBytes())
}

func TestNewPIDPPS(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		pid, pps, err := NewPIDPPS(rand.Reader)
		require.NoError(t, err)
		p, err := NormalizePID(pid)
		require.NoError(t, err)
		assert.Equal(t, pid, p)
		k, err := NormalizePPS(pps)
		require.NoError(t, err)
		assert.Equal(t, pps, k)
		assert.False(t, seen[pid+pps])
		seen[pid+pps] = true
	}
	_, _, err := NewPIDPPS(strings.NewReader("short"))
	assert.Error(t, err)
}

// Dell's UUID carries the service tag: the published example, the round
// trip for a fleet's identities, and refusals.
func TestDellUUIDFromServiceTag(t *testing.T) {
	assert.Equal(t, "4C4C4544-0033-3410-8036-C4C04F32334A", DellUUID("D34623J").String())
	for i := range 200 {
		id, err := Of(3, i%4, i)
		require.NoError(t, err)
		assert.True(t, strings.HasPrefix(id.UUID.String(), "4C4C4544-00"), id.UUID.String())
		tag, ok := DellServiceTag(id.UUID)
		require.True(t, ok)
		assert.Equal(t, id.ServiceTag, tag)
	}
	assert.Equal(t, UUID{}, DellUUID("SHORT"))
	assert.Equal(t, UUID{}, DellUUID("D34623\xff"))
	_, ok := DellServiceTag(UUIDFromSMBIOS([16]byte{0x4b, 0x52, 0x9b, 0x93}))
	assert.False(t, ok, "a UUID in another vendor's scheme has no tag")
}

// FactoryDevice inverts the PID bijection: every device's factory PID
// names that device, and PIDs drawn at random name a device about as often
// as the ordinal space fills the PID space (2^27 of 36^7, one in 580).
func TestFactoryDevice(t *testing.T) {
	rng := mrand.New(mrand.NewPCG(5, 6))
	for _, seed := range []uint64{0, 7, 77, 1 << 60} {
		for range 2000 {
			shard, index := rng.IntN(MaxShards), rng.IntN(MaxIndex)
			id, err := Of(seed, shard, index)
			require.NoError(t, err)
			s, i, ok := FactoryDevice(seed, id.PID)
			require.True(t, ok, "seed %d: %s is device %d/%d's", seed, id.PID, shard, index)
			require.Equal(t, [2]int{shard, index}, [2]int{s, i})
			// With the display dash and lower case, as a person types it.
			s, i, ok = FactoryDevice(seed, strings.ToLower(id.PID[:4]+"-"+id.PID[4:]))
			require.True(t, ok)
			require.Equal(t, [2]int{shard, index}, [2]int{s, i})
		}
	}
	hits := 0
	const draws = 200000
	for range draws {
		pid, _, err := NewPIDPPS(rngReader{rng})
		require.NoError(t, err)
		if s, i, ok := FactoryDevice(77, pid); ok {
			hits++
			id, _ := Of(77, s, i)
			require.Equal(t, pid, id.PID, "a hit is that device's PID")
		}
	}
	// 2^27/36^7 = 0.00171: 343 expected; far outside 200-500 is a wrong inverse.
	assert.InDelta(t, 343, hits, 150)
	_, _, ok := FactoryDevice(77, "0000037X")
	assert.False(t, ok, "a bad checksum is no PID")
}

type rngReader struct{ r *mrand.Rand }

func (r rngReader) Read(b []byte) (int, error) {
	for i := range b {
		b[i] = byte(r.r.Uint32())
	}
	return len(b), nil
}
