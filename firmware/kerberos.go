package firmware

import (
	"errors"
	"fmt"
	"time"

	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/negotiate"
)

// defaultClockSkew is AMT's MaximumClockTolerance when none was set:
// 5 minutes, also its maximum.
const defaultClockSkew = 5 * time.Minute

// acceptTicket authenticates `Authorization: Negotiate …` against the
// Kerberos settings and ACL of s at the ME's clock: the user is the
// ticket's client principal, with the realms of the ACL entry its SID (or
// one of its groups') names. A Kerberos user is a user ACL entry, as a
// Digest user is: never the admin (admin is always false). user is set as soon as the ticket is read, so
// that a refusal past that point can say whose it was.
func (d *Device) acceptTicket(s *mebx.Settings, h string) (user string, admin bool, realms []uint32, err error) {
	a := &s.AMT
	if !a.KerberosEnabled {
		return "", false, nil, negotiate.ErrNotConfigured
	}
	req, err := negotiate.ParseAuthorization(h)
	if err != nil {
		return "", false, nil, err
	}
	skew := time.Duration(a.KerberosMaxClockSkew) * time.Minute
	if skew <= 0 || skew > defaultClockSkew {
		skew = defaultClockSkew
	}
	id, err := d.kerberos.Accept(req, negotiate.Settings{Realm: a.KerberosRealm, MasterKey: a.KerberosMasterKey, MaxClockSkew: skew}, d.rtc())
	if err != nil {
		return id.Principal, false, nil, err
	}
	e := kerberosEntry(a, id.SIDs)
	switch {
	case e == nil:
		return id.Principal, false, nil, fmt.Errorf("%w: %s (SID %s) is not in the ACL", errNotInACL, id.Principal, id.SIDs[0])
	case e.Access == 0:
		return id.Principal, false, nil, fmt.Errorf("%w: %s may log in locally only", errNotInACL, id.Principal)
	}
	return id.Principal, false, e.Realms, nil
}

var errNotInACL = errors.New("negotiate: no network access")

// kerberosEntry is the ACL entry of the user's own SID, else the first of
// its groups'.
func kerberosEntry(a *mebx.AMTSettings, sids []negotiate.SID) *mebx.ACLEntry {
	var group *mebx.ACLEntry
	for i := range a.Users {
		u := &a.Users[i]
		if u.KerberosSID == "" {
			continue
		}
		sid, err := negotiate.ParseSID(u.KerberosSID)
		if err != nil {
			continue
		}
		for j, s := range sids {
			if !s.Equal(sid) {
				continue
			}
			if j == 0 {
				return u
			}
			if group == nil {
				group = u
			}
		}
	}
	return group
}
