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

// DellUUID is the SMBIOS UUID a Dell BIOS derives from the machine's
// 7-character service tag: the first field 4C4C4544 ("DELL" as a
// little-endian word), the tag's characters in ASCII spread over the other
// fields around fixed bytes, and its first character with the top bit set.
// For tag "D34623J": 4C4C4544-0033-3410-8036-C4C04F32334A. SCSs key devices
// by this UUID (MeshCentral's node id is made of it), so the simulator uses
// Dell's scheme rather than random bytes. A tag of other than 7 ASCII
// characters gives the zero UUID.
func DellUUID(tag string) UUID {
	var u UUID
	if len(tag) != 7 {
		return u
	}
	for i := 0; i < len(tag); i++ {
		if tag[i] >= 0x80 {
			return UUID{}
		}
	}
	binary.BigEndian.PutUint32(u[0:4], 0x4C4C4544)
	u[4], u[5] = 0x00, tag[1]
	u[6], u[7] = tag[2], 0x10
	u[8], u[9] = 0x80, tag[3]
	u[10], u[11], u[12] = tag[0]|0x80, 0xC0, 0x4F
	copy(u[13:16], tag[4:7])
	return u
}

// DellServiceTag reads the service tag back from a UUID in Dell's scheme;
// ok is false for any other UUID.
func DellServiceTag(u UUID) (tag string, ok bool) {
	if binary.BigEndian.Uint32(u[0:4]) != 0x4C4C4544 || u[4] != 0 || u[7] != 0x10 || u[8] != 0x80 ||
		u[10]&0x80 == 0 || u[11] != 0xC0 || u[12] != 0x4F {
		return "", false
	}
	b := []byte{u[10] & 0x7F, u[5], u[6], u[9], u[13], u[14], u[15]}
	return string(b), true
}
