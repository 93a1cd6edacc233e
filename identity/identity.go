// Package identity derives the hardware identity of a simulated OptiPlex 960
// (MAC, SMBIOS UUID, service tag, host name) and its factory PID/PPS pair as a
// pure function of (seed, shard, index).
//
// The same inputs give the same fleet on any machine, and distinct (shard,
// index) pairs under one seed never share a MAC, UUID or PID: each is derived
// from a bijective permutation of the device's ordinal, not from a hash, so a
// fleet split across processes (Kubernetes Indexed Job shards) is one fleet.
package identity

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
	"net"
	"strings"
)

const (
	// MaxShards and MaxIndex bound the ordinal space so that MACs stay unique:
	// 2^7 shards × 2^20 devices per shard = 2^27 = 8 Dell OUIs × 2^24.
	MaxShards = 1 << 7
	MaxIndex  = 1 << 20

	ordinalBits = 27
)

// dellOUIs are Dell organisationally unique identifiers in use on desktops of
// the 82566DM era (2007–2009). Eight of them give the 27-bit MAC space.
var dellOUIs = [8][3]byte{
	{0x00, 0x1C, 0x23}, {0x00, 0x1D, 0x09}, {0x00, 0x1E, 0x4F}, {0x00, 0x21, 0x70},
	{0x00, 0x21, 0x9B}, {0x00, 0x22, 0x19}, {0x00, 0x23, 0xAE}, {0x00, 0x24, 0xE8},
}

// Identity is what a device is born with.
type Identity struct {
	Seed  uint64
	Shard int
	Index int

	MAC        net.HardwareAddr
	UUID       UUID
	ServiceTag string // 7 characters, like a Dell service tag
	HostName   string
	PID        string // factory provisioning ID, 8 characters, no dash
	PPS        string // factory pre-shared secret, 32 characters, no dashes
}

// Of returns the identity of device index in shard under seed.
func Of(seed uint64, shard, index int) (Identity, error) {
	if shard < 0 || shard >= MaxShards {
		return Identity{}, fmt.Errorf("identity: shard %d out of range [0,%d)", shard, MaxShards)
	}
	if index < 0 || index >= MaxIndex {
		return Identity{}, fmt.Errorf("identity: index %d out of range [0,%d)", index, MaxIndex)
	}
	ord := uint64(shard)<<20 | uint64(index)
	k := keys(seed)

	id := Identity{Seed: seed, Shard: shard, Index: index}

	// MAC: an affine bijection of the ordinal modulo 2^27; the top 3 bits pick
	// the OUI, the low 24 bits are the NIC-specific part.
	m := (ord*k.macMul + k.macAdd) & (1<<ordinalBits - 1)
	oui := dellOUIs[m>>24]
	id.MAC = net.HardwareAddr{oui[0], oui[1], oui[2], byte(m >> 16), byte(m >> 8), byte(m)}

	// Service tag: 7 base-36 digits of another bijection of the ordinal.
	tag := (ord*k.tagMul + k.tagAdd) % pow36(7)
	id.ServiceTag = base36(tag, 7)
	id.HostName = "optiplex-" + strings.ToLower(id.ServiceTag)

	// PID: 7 base-36 digits of a third bijection plus the checksum digit.
	p := (ord*k.pidMul + k.pidAdd) % pow36(7)
	id.PID = WithChecksum(base36(p, 7))

	// UUID: Dell's scheme from the service tag, so as unique as the tag.
	// PPS: keyed pseudo-random bytes.
	mac := hmac.New(sha256.New, k.secret[:])
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], ord)
	mac.Write(b[:])
	sum := mac.Sum(nil)
	id.UUID = DellUUID(id.ServiceTag)
	id.PPS = ppsFrom(sum[8:32])
	return id, nil
}

// FactoryDevice names the device under seed whose factory PID pid is, if
// any: the PID is a bijection of the device's ordinal (shard, index), so
// its inverse names the one ordinal that could have it, and the PID is a
// factory PID when that ordinal is in range. An SCS that draws new PIDs
// uses it to stay off the PIDs of devices it has not met yet (one PID in
// 580 is some device's).
func FactoryDevice(seed uint64, pid string) (shard, index int, ok bool) {
	p, err := NormalizePID(pid)
	if err != nil {
		return 0, 0, false
	}
	var v uint64
	for i := range 7 {
		v = v*36 + uint64(strings.IndexByte(alphabet, p[i]))
	}
	k, n36 := keys(seed), pow36(7)
	d := (v + n36 - k.pidAdd) % n36
	hi, lo := bits.Mul64(d, modInverse(k.pidMul%n36, n36))
	ord := bits.Rem64(hi, lo, n36)
	if ord >= MaxShards*MaxIndex {
		return 0, 0, false
	}
	return int(ord >> 20), int(ord & (MaxIndex - 1)), true
}

// modInverse is a's inverse modulo n (a and n coprime), by the extended
// Euclidean algorithm.
func modInverse(a, n uint64) uint64 {
	t, newT := int64(0), int64(1)
	r, newR := int64(n), int64(a)
	for newR != 0 {
		q := r / newR
		t, newT = newT, t-q*newT
		r, newR = newR, r-q*newR
	}
	if t < 0 {
		t += int64(n)
	}
	return uint64(t)
}

type derivedKeys struct {
	macMul, macAdd uint64
	tagMul, tagAdd uint64
	pidMul, pidAdd uint64
	secret         [32]byte
}

func keys(seed uint64) derivedKeys {
	var in [8]byte
	binary.BigEndian.PutUint64(in[:], seed)
	h := sha256.Sum256(append([]byte("amtsim identity v1"), in[:]...))
	word := func(i int) uint64 { return binary.BigEndian.Uint64(h[i*8:]) }
	n36 := pow36(7)
	k := derivedKeys{
		// Odd multipliers are invertible modulo 2^27; multipliers coprime to 6
		// are invertible modulo 36^7.
		macMul: word(0) | 1,
		macAdd: word(1),
		tagMul: coprime6(word(2) % n36),
		tagAdd: word(3) % n36,
		pidMul: coprime6(word(1)>>7%n36 + 1),
		pidAdd: word(0) >> 9 % n36,
	}
	k.secret = sha256.Sum256(append([]byte("amtsim secret v1"), h[:]...))
	return k
}

// coprime6 nudges x to the next value coprime to 2 and 3.
func coprime6(x uint64) uint64 {
	for x%2 == 0 || x%3 == 0 {
		x++
	}
	return x
}

func pow36(n int) uint64 {
	r := uint64(1)
	for range n {
		r *= 36
	}
	return r
}

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"

func base36(v uint64, width int) string {
	b := make([]byte, width)
	for i := width - 1; i >= 0; i-- {
		b[i] = alphabet[v%36]
		v /= 36
	}
	return string(b)
}

func ppsFrom(r []byte) string {
	var sb strings.Builder
	for g := range 8 {
		group := make([]byte, 3)
		for i := range group {
			group[i] = alphabet[int(r[g*3+i])%36]
		}
		sb.WriteString(WithChecksum(string(group)))
	}
	return sb.String()
}
