// Package negotiate is AMT's side of HTTP Negotiate (RFC 4559): the
// Authorization header, the SPNEGO token in it (RFC 4178) and the Kerberos
// AP-REQ inside that (RFC 4121 §4.1), accepted the way AMT accepts it.
//
// What AMT 5 does, from Intel's AMT_KerberosSettingData reference and its
// Active Directory integration guide (docs/protocol.md):
//   - The service key is the 16-byte MasterKey the SCS set, used as an
//     RC4-HMAC key (etype 23, RFC 4757): the MD4 of the AMT object's
//     password, which has no salt, so every SPN registered for the device
//     shares it. EncryptionAlgorithm is always 0 (RC4-HMAC) in AMT 5.
//   - ServicePrincipalName and KeyVersion are stored and returned but not
//     used: a ticket is the device's if its key opens it. A ticket for
//     another service does not open.
//   - MaximumClockTolerance (minutes, 5 at most and by default) bounds
//     the authenticator's time and the ticket's times against the ME's
//     clock.
//   - The user is found by SID in the ACL: the user's own SID or a group's
//     from the ticket's PAC (KERB_VALIDATION_INFO), as Active Directory
//     issues it.
//
// One departure, documented: a ticket from a KDC that writes no logon
// information into its PAC (MIT Kerberos does not) names its client by
// principal alone; the client's SID is then PrincipalSID of the principal,
// and an SCS that provisions such users gives the same SID (the reference
// SCS's profile takes a principal for that).
//
// The wire layout of the header:
//
//	Authorization: Negotiate <base64 of a GSS-API token>
//	token = SPNEGO NegTokenInit ([APPLICATION 0] OID 1.3.6.1.5.5.2, then
//	        NegTokenInit whose mechToken is the Kerberos token), or the
//	        Kerberos token alone ([APPLICATION 0] OID 1.2.840.113554.1.2.2,
//	        TOK_ID 01 00, AP-REQ), as some clients send it.
//
// ASN.1 and the cryptography are gokrb5's; this package says what is
// accepted and what is refused, and why.
package negotiate

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/gssapi"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/spnego"
)

// ErrMalformed is wrapped by every error of ParseAuthorization.
var ErrMalformed = errors.New("negotiate: malformed token")

// errDecoderPanic marks a refusal that came from a decoder's panic.
var errDecoderPanic = errors.New("decoder panicked")

// MaxToken bounds the base64 token a device reads. Intel documents 4K of
// base64 as AMT 5's limit for a Kerberos ticket on HTTP; a larger one is
// refused before it is decoded, as AMT refuses it.
const MaxToken = 4096

// Scheme is the auth-scheme of the header, as AMT writes it in its
// challenge.
const Scheme = "Negotiate"

// IsNegotiate says whether an Authorization header value is of the
// Negotiate scheme (case-insensitive, RFC 7235 §2.1).
func IsNegotiate(h string) bool {
	return len(h) >= len(Scheme) && strings.EqualFold(h[:len(Scheme)], Scheme) &&
		(len(h) == len(Scheme) || h[len(Scheme)] == ' ')
}

// ParseAuthorization reads `Negotiate <token>` and returns the AP-REQ the
// token carries, still encrypted. It refuses: another scheme; no token; a
// token over MaxToken; bad base64; a token that is neither SPNEGO nor
// Kerberos; a NegTokenInit that offers no Kerberos mechanism or carries no
// mechToken; a Kerberos token that is not an AP-REQ.
func ParseAuthorization(h string) (req *messages.APReq, err error) {
	// gokrb5's decoders meet whatever a peer sends; a panic in one must
	// cost this request, not the device (FuzzParseAuthorization fails on
	// any that reaches here).
	defer func() {
		if r := recover(); r != nil {
			req, err = nil, fmt.Errorf("%w: %v (%s)", ErrMalformed, r, errDecoderPanic)
		}
	}()
	if !IsNegotiate(h) {
		return nil, fmt.Errorf("%w: not the Negotiate scheme", ErrMalformed)
	}
	tok := strings.TrimSpace(h[len(Scheme):])
	switch {
	case tok == "":
		return nil, fmt.Errorf("%w: no token", ErrMalformed)
	case len(tok) > MaxToken:
		return nil, fmt.Errorf("%w: token of %d characters, over AMT's %d", ErrMalformed, len(tok), MaxToken)
	}
	b, err := base64.StdEncoding.DecodeString(tok)
	if err != nil {
		return nil, fmt.Errorf("%w: token is not base64: %v", ErrMalformed, err)
	}
	return parseToken(b)
}

// parseToken reads a GSS-API initial context token.
func parseToken(b []byte) (*messages.APReq, error) {
	oid, err := tokenOID(b)
	if err != nil {
		return nil, err
	}
	switch {
	case oid.Equal(gssapi.OIDSPNEGO.OID()):
		var t spnego.SPNEGOToken
		if err := t.Unmarshal(b); err != nil {
			return nil, fmt.Errorf("%w: SPNEGO: %v", ErrMalformed, err)
		}
		if !t.Init {
			return nil, fmt.Errorf("%w: SPNEGO token is not a NegTokenInit", ErrMalformed)
		}
		krb := false
		for _, m := range t.NegTokenInit.MechTypes {
			krb = krb || m.Equal(gssapi.OIDKRB5.OID()) || m.Equal(gssapi.OIDMSLegacyKRB5.OID())
		}
		if !krb {
			return nil, fmt.Errorf("%w: NegTokenInit offers no Kerberos mechanism", ErrMalformed)
		}
		if len(t.NegTokenInit.MechTokenBytes) == 0 {
			return nil, fmt.Errorf("%w: NegTokenInit carries no mechToken", ErrMalformed)
		}
		return parseKRB5(t.NegTokenInit.MechTokenBytes)
	case oid.Equal(gssapi.OIDKRB5.OID()):
		return parseKRB5(b)
	}
	return nil, fmt.Errorf("%w: mechanism %s is neither SPNEGO nor Kerberos", ErrMalformed, oid)
}

// tokenOID reads the mechanism OID at the head of an initial context
// token (RFC 2743 §3.1) without decoding the rest.
func tokenOID(b []byte) (asn1.ObjectIdentifier, error) {
	var raw asn1.RawValue
	if _, err := asn1.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%w: not DER: %v", ErrMalformed, err)
	}
	if raw.Class != asn1.ClassApplication || raw.Tag != 0 {
		return nil, fmt.Errorf("%w: not a GSS-API initial context token", ErrMalformed)
	}
	var oid asn1.ObjectIdentifier
	if _, err := asn1.Unmarshal(raw.Bytes, &oid); err != nil {
		return nil, fmt.Errorf("%w: no mechanism OID: %v", ErrMalformed, err)
	}
	return oid, nil
}

// parseKRB5 reads a Kerberos GSS-API token that must be an AP-REQ.
func parseKRB5(b []byte) (*messages.APReq, error) {
	if oid, err := tokenOID(b); err != nil {
		return nil, err
	} else if !oid.Equal(gssapi.OIDKRB5.OID()) {
		return nil, fmt.Errorf("%w: mechToken of mechanism %s, not Kerberos", ErrMalformed, oid)
	}
	var k spnego.KRB5Token
	if err := k.Unmarshal(b); err != nil {
		return nil, fmt.Errorf("%w: Kerberos token: %v", ErrMalformed, err)
	}
	if !k.IsAPReq() {
		return nil, fmt.Errorf("%w: Kerberos token is not an AP-REQ", ErrMalformed)
	}
	return &k.APReq, nil
}
