package negotiate

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// SID is a Windows security identifier in its binary form (MS-DTYP
// §2.4.2.2): revision 1, the count of sub-authorities, a 48-bit
// big-endian identifier authority, then each sub-authority as a 32-bit
// little-endian integer. AMT's ACL holds it base64-encoded
// (KerberosUserSid).
type SID []byte

// ErrSID is wrapped by every SID parse error.
var ErrSID = errors.New("negotiate: malformed SID")

// maxSubAuthorities is MS-DTYP's limit.
const maxSubAuthorities = 15

// ParseSID reads a SID in either form an administrator or an SCS gives:
// base64 of the binary form, as AMT takes it, or the S-1-… string.
func ParseSID(s string) (SID, error) {
	if strings.HasPrefix(s, "S-") || strings.HasPrefix(s, "s-") {
		return parseSIDString(s)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%w: neither S-1-… nor base64: %v", ErrSID, err)
	}
	return checkSID(b)
}

func checkSID(b []byte) (SID, error) {
	if len(b) < 8 || b[0] != 1 {
		return nil, fmt.Errorf("%w: %d bytes, revision %v", ErrSID, len(b), b[:min(len(b), 1)])
	}
	if n := int(b[1]); n > maxSubAuthorities || len(b) != 8+4*n {
		return nil, fmt.Errorf("%w: %d sub-authorities in %d bytes", ErrSID, n, len(b))
	}
	return SID(b), nil
}

func parseSIDString(s string) (SID, error) {
	parts := strings.Split(s[2:], "-")
	if len(parts) < 2 || parts[0] != "1" || len(parts)-2 > maxSubAuthorities {
		return nil, fmt.Errorf("%w: %q", ErrSID, s)
	}
	auth, err := strconv.ParseUint(parts[1], 10, 48)
	if err != nil {
		return nil, fmt.Errorf("%w: authority in %q", ErrSID, s)
	}
	b := make([]byte, 8, 8+4*(len(parts)-2))
	b[0], b[1] = 1, byte(len(parts)-2)
	for i := range 6 {
		b[2+i] = byte(auth >> (8 * (5 - i)))
	}
	for _, p := range parts[2:] {
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("%w: sub-authority %q in %q", ErrSID, p, s)
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(v))
	}
	return SID(b), nil
}

// String is the S-1-… form.
func (s SID) String() string {
	if _, err := checkSID(s); err != nil {
		return "S-?"
	}
	var auth uint64
	for _, c := range s[2:8] {
		auth = auth<<8 | uint64(c)
	}
	var b strings.Builder
	b.WriteString("S-1-")
	b.WriteString(strconv.FormatUint(auth, 10))
	for i := 8; i < len(s); i += 4 {
		b.WriteByte('-')
		b.WriteString(strconv.FormatUint(uint64(binary.LittleEndian.Uint32(s[i:])), 10))
	}
	return b.String()
}

// Base64 is the form AMT's ACL holds (KerberosUserSid).
func (s SID) Base64() string { return base64.StdEncoding.EncodeToString(s) }

// Equal compares two SIDs.
func (s SID) Equal(o SID) bool { return bytes.Equal(s, o) }

// PrincipalSID is amtsim's SID for a principal whose ticket carries no
// logon information (a KDC without Active Directory): a domain SID
// S-1-5-21-a-b-c from the upper-case realm and a relative ID from the
// principal, each from SHA-256, the RID at 1000 or above as a user's is.
// It is a documented stand-in for the lookup Active Directory does; an SCS
// provisioning such a user gives this SID in its ACL entry.
func PrincipalSID(name, realm string) SID {
	realm = strings.ToUpper(realm)
	d := sha256.Sum256([]byte("amtsim realm " + realm))
	u := sha256.Sum256([]byte("amtsim principal " + name + "@" + realm))
	b := []byte{1, 5, 0, 0, 0, 0, 0, 5}
	b = binary.LittleEndian.AppendUint32(b, 21)
	b = append(b, d[:12]...)
	rid := 1000 + binary.LittleEndian.Uint32(u[:4])%(1<<31-1000)
	return SID(binary.LittleEndian.AppendUint32(b, rid))
}

// ParsePrincipal splits name@REALM; a name without a realm takes
// defaultRealm.
func ParsePrincipal(p, defaultRealm string) (name, realm string, err error) {
	i := strings.LastIndexByte(p, '@')
	switch {
	case p == "" || i == 0:
		return "", "", fmt.Errorf("negotiate: principal %q has no name", p)
	case i < 0:
		if defaultRealm == "" {
			return "", "", fmt.Errorf("negotiate: principal %q has no realm", p)
		}
		return p, defaultRealm, nil
	case i == len(p)-1:
		return "", "", fmt.Errorf("negotiate: principal %q has an empty realm", p)
	}
	return p[:i], p[i+1:], nil
}
