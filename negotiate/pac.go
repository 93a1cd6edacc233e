package negotiate

import (
	"encoding/binary"
	"fmt"
	"io"
	"log"

	"github.com/jcmturner/gokrb5/v8/iana/adtype"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/pac"
	"github.com/jcmturner/gokrb5/v8/types"
)

// pacLogonInfo is the PAC buffer type of KERB_VALIDATION_INFO (MS-PAC
// §2.4).
const pacLogonInfo = 1

// pacSIDs reads the client's SIDs from the ticket's PAC: the user's SID
// (logon domain + user RID) first, then its groups'. ok is false when the
// ticket has no PAC, or a PAC without logon information (MIT Kerberos
// writes one of those); a PAC with logon information must carry a server
// signature made with the device's key, or it is refused.
func pacSIDs(enc *messages.EncTicketPart, key types.EncryptionKey) (sids []SID, ok bool, err error) {
	// The NDR decoder reads what the KDC wrote before the signature over
	// it is checked; whatever it meets, the device answers 401.
	defer func() {
		if r := recover(); r != nil {
			sids, ok, err = nil, false, fmt.Errorf("PAC does not decode: %v", r)
		}
	}()
	raw := findPAC(enc.AuthorizationData)
	if raw == nil {
		return nil, false, nil
	}
	logon, err := checkPACLayout(raw)
	if err != nil || !logon {
		return nil, false, err
	}
	var p pac.PACType
	if err := p.Unmarshal(raw); err != nil {
		return nil, false, err
	}
	if err := p.ProcessPACInfoBuffers(key, log.New(io.Discard, "", 0)); err != nil {
		return nil, false, err
	}
	v := p.KerbValidationInfo
	user, err := ParseSID(fmt.Sprintf("%s-%d", v.LogonDomainID.String(), v.UserID))
	if err != nil {
		return nil, false, err
	}
	sids = append(sids, user)
	for _, g := range v.GetGroupMembershipSIDs() {
		if s, err := ParseSID(g); err == nil {
			sids = append(sids, s)
		}
	}
	return sids, true, nil
}

// findPAC returns the AD-WIN2K-PAC inside an AD-IF-RELEVANT element.
func findPAC(ad types.AuthorizationData) []byte {
	for _, e := range ad {
		if e.ADType != adtype.ADIfRelevant {
			continue
		}
		var inner types.AuthorizationData
		if err := inner.Unmarshal(e.ADData); err != nil {
			continue
		}
		for _, i := range inner {
			if i.ADType == adtype.ADWin2KPAC {
				return i.ADData
			}
		}
	}
	return nil
}

// checkPACLayout checks the PACTYPE header's buffer table against the
// PAC's length before gokrb5 reads it (it allocates the table by the count
// it reads and slices by the offsets), and says whether a logon-info
// buffer is there.
func checkPACLayout(b []byte) (logon bool, err error) {
	if len(b) < 8 {
		return false, fmt.Errorf("PAC of %d bytes", len(b))
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n) > uint64(len(b)-8)/16 {
		return false, fmt.Errorf("PAC claims %d buffers in %d bytes", n, len(b))
	}
	for i := range int(n) {
		e := b[8+16*i:]
		typ, size, off := binary.LittleEndian.Uint32(e), binary.LittleEndian.Uint32(e[4:]), binary.LittleEndian.Uint64(e[8:])
		if off > uint64(len(b)) || uint64(size) > uint64(len(b))-off {
			return false, fmt.Errorf("PAC buffer %d (type %d) at %d+%d runs past %d bytes", i, typ, off, size, len(b))
		}
		logon = logon || typ == pacLogonInfo
	}
	return logon, nil
}
