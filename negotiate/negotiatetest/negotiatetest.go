// Package negotiatetest makes the Negotiate headers a Kerberos client
// sends, for tests of what accepts them: a ticket issued the way a KDC
// issues it (gokrb5's own marshalling), with the fields a test needs to
// get wrong. It is the KDC and the client in one, with no network.
package negotiatetest

import (
	"encoding/base64"
	"fmt"
	"time"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/asn1tools"
	"github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/iana/nametype"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/spnego"
	"github.com/jcmturner/gokrb5/v8/types"
)

// Ticket is a service ticket and the authenticator sent with it.
type Ticket struct {
	Service  string // SPN, e.g. HTTP/amt-1.amtsim.test
	Realm    string
	Password string // the service key's password
	Client   string // the client's name in Realm
	// EType encrypts the ticket; 0 is RC4-HMAC, AMT's.
	EType int32
	// Start and End bound the ticket; zero is from an hour ago for ten.
	Start, End time.Time
	// CTime is the authenticator's time; zero is now.
	CTime time.Time
	// AuthenticatorClient, when set, names another client in the
	// authenticator than in the ticket.
	AuthenticatorClient string
}

// Header is `Negotiate <SPNEGO NegTokenInit carrying the AP-REQ>`, as
// curl --negotiate and browsers send it.
func (t Ticket) Header() (string, error) {
	k, err := t.KRB5Token()
	if err != nil {
		return "", err
	}
	s, err := SPNEGO(k)
	if err != nil {
		return "", err
	}
	return "Negotiate " + base64.StdEncoding.EncodeToString(s), nil
}

// KRB5Token is the Kerberos GSS-API token: OID, TOK_ID 01 00, AP-REQ.
func (t Ticket) KRB5Token() ([]byte, error) {
	now := time.Now()
	if t.EType == 0 {
		t.EType = etypeID.RC4_HMAC
	}
	if t.Start.IsZero() {
		t.Start = now.Add(-time.Hour)
	}
	if t.End.IsZero() {
		t.End = t.Start.Add(10 * time.Hour)
	}
	if t.CTime.IsZero() {
		t.CTime = now
	}
	kt := keytab.New()
	if err := kt.AddEntry(t.Service, t.Realm, t.Password, t.Start, 1, t.EType); err != nil {
		return nil, fmt.Errorf("negotiatetest: service key: %w", err)
	}
	sname := types.NewPrincipalName(nametype.KRB_NT_SRV_INST, t.Service)
	cname := types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, t.Client)
	tkt, sk, err := messages.NewTicket(cname, t.Realm, sname, t.Realm, types.NewKrbFlags(), kt, t.EType, 1, t.Start, t.Start, t.End, t.End)
	if err != nil {
		return nil, fmt.Errorf("negotiatetest: ticket: %w", err)
	}
	au, err := types.NewAuthenticator(t.Realm, cname)
	if err != nil {
		return nil, err
	}
	au.CTime, au.Cusec = t.CTime.Truncate(time.Second), t.CTime.Nanosecond()/1000
	if t.AuthenticatorClient != "" {
		au.CName = types.NewPrincipalName(nametype.KRB_NT_PRINCIPAL, t.AuthenticatorClient)
	}
	req, err := messages.NewAPReq(tkt, sk, au)
	if err != nil {
		return nil, fmt.Errorf("negotiatetest: AP-REQ: %w", err)
	}
	b, err := req.Marshal()
	if err != nil {
		return nil, err
	}
	oid, err := asn1.Marshal(gssapi.OIDKRB5.OID())
	if err != nil {
		return nil, err
	}
	return asn1tools.AddASNAppTag(append(append(oid, 1, 0), b...), 0), nil
}

// SPNEGO wraps a mechanism token in a NegTokenInit offering Kerberos.
func SPNEGO(mech []byte) ([]byte, error) {
	return SPNEGOOffering(mech, gssapi.OIDKRB5.OID())
}

// SPNEGOOffering wraps a mechanism token in a NegTokenInit offering mechs.
func SPNEGOOffering(mech []byte, mechs ...asn1.ObjectIdentifier) ([]byte, error) {
	tok := spnego.SPNEGOToken{Init: true, NegTokenInit: spnego.NegTokenInit{MechTypes: mechs, MechTokenBytes: mech}}
	return tok.Marshal()
}
