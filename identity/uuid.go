package identity

import (
	"encoding/binary"
	"fmt"
)

// UUID is an SMBIOS system UUID in its canonical (string) field order.
type UUID [16]byte

// String formats the UUID as SMBIOS tools print it.
func (u UUID) String() string {
	return fmt.Sprintf("%08X-%04X-%04X-%04X-%012X",
		binary.BigEndian.Uint32(u[0:4]), binary.BigEndian.Uint16(u[4:6]),
		binary.BigEndian.Uint16(u[6:8]), binary.BigEndian.Uint16(u[8:10]), u[10:16])
}

// SMBIOSBytes returns the UUID in SMBIOS byte order: the first three fields
// little-endian, the rest as is. This is the order the AMT Hello carries.
func (u UUID) SMBIOSBytes() [16]byte {
	var b [16]byte
	b[0], b[1], b[2], b[3] = u[3], u[2], u[1], u[0]
	b[4], b[5] = u[5], u[4]
	b[6], b[7] = u[7], u[6]
	copy(b[8:], u[8:])
	return b
}

// UUIDFromSMBIOS is the inverse of SMBIOSBytes.
func UUIDFromSMBIOS(b [16]byte) UUID {
	var u UUID
	u[0], u[1], u[2], u[3] = b[3], b[2], b[1], b[0]
	u[4], u[5] = b[5], b[4]
	u[6], u[7] = b[7], b[6]
	copy(u[8:], b[8:])
	return u
}

// dellUUID builds a UUID with Dell's first field 4C4C4544 ("DELL" read as a
// little-endian word), the ordinal in the next 4 bytes (unique within a seed)
// and keyed random bytes after it.
func dellUUID(ord uint64, r []byte) UUID {
	var u UUID
	binary.BigEndian.PutUint32(u[0:4], 0x4C4C4544)
	binary.BigEndian.PutUint32(u[4:8], uint32(ord))
	copy(u[8:16], r)
	u[8] = u[8]&0x3F | 0x80 // RFC 4122 variant, as SMBIOS UUIDs carry
	return u
}
