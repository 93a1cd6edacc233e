package negotiate

import (
	"encoding/base64"
	"encoding/hex"
	"testing"
	"time"

	"github.com/jcmturner/gofork/encoding/asn1"
	"github.com/jcmturner/gokrb5/v8/iana/adtype"
	"github.com/jcmturner/gokrb5/v8/iana/etypeID"
	"github.com/jcmturner/gokrb5/v8/keytab"
	"github.com/jcmturner/gokrb5/v8/messages"
	"github.com/jcmturner/gokrb5/v8/test/testdata"
	"github.com/jcmturner/gokrb5/v8/types"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/negotiate/negotiatetest"
)

const (
	realm      = "AMTSIM.TEST"
	svcPass    = "Service-Pass1!"
	clientName = "alice"
)

func defaultSpec(now time.Time) negotiatetest.Ticket {
	return negotiatetest.Ticket{Service: "HTTP/amt-1.amtsim.test", Realm: realm, Password: svcPass, Client: clientName,
		Start: now.Add(-time.Minute), End: now.Add(10 * time.Hour), CTime: now}
}

// header builds `Negotiate <SPNEGO NegTokenInit<Kerberos AP-REQ>>`.
func header(t testing.TB, s negotiatetest.Ticket) string {
	t.Helper()
	h, err := s.Header()
	require.NoError(t, err)
	return h
}

func krb5Token(t testing.TB, s negotiatetest.Ticket) []byte {
	t.Helper()
	b, err := s.KRB5Token()
	require.NoError(t, err)
	return b
}

func spnegoToken(t testing.TB, mech []byte) []byte {
	t.Helper()
	b, err := negotiatetest.SPNEGO(mech)
	require.NoError(t, err)
	return b
}

func settings(t testing.TB) Settings {
	t.Helper()
	k, err := KeyFromPassword(svcPass)
	require.NoError(t, err)
	return Settings{Realm: realm, MasterKey: k, MaxClockSkew: 5 * time.Minute}
}

func TestAcceptGoodTicket(t *testing.T) {
	now := time.Now()
	req, err := ParseAuthorization(header(t, defaultSpec(now)))
	require.NoError(t, err)
	var a Acceptor
	id, err := a.Accept(req, settings(t), now)
	require.NoError(t, err)
	assert.Equal(t, clientName+"@"+realm, id.Principal)
	assert.False(t, id.FromPAC, "gokrb5's ticket has no PAC")
	require.Len(t, id.SIDs, 1)
	assert.Equal(t, PrincipalSID(clientName, realm), id.SIDs[0])
}

// The bare Kerberos token (no SPNEGO wrapper) is read the same.
func TestAcceptBareKerberosToken(t *testing.T) {
	now := time.Now()
	req, err := ParseAuthorization("Negotiate " + base64.StdEncoding.EncodeToString(krb5Token(t, defaultSpec(now))))
	require.NoError(t, err)
	var a Acceptor
	_, err = a.Accept(req, settings(t), now)
	require.NoError(t, err)
}

func TestAcceptRefuses(t *testing.T) {
	now := time.Now()
	for _, c := range []struct {
		name string
		edit func(*negotiatetest.Ticket)
		at   time.Time // the ME's clock
		want error
	}{
		{"another service's key", func(s *negotiatetest.Ticket) { s.Password = "Other-Pass1!" }, now, ErrKey},
		{"AES instead of RC4-HMAC", func(s *negotiatetest.Ticket) { s.EType = etypeID.AES256_CTS_HMAC_SHA1_96 }, now, ErrEType},
		{"another realm", func(s *negotiatetest.Ticket) { s.Realm = "EVIL.TEST" }, now, ErrRealm},
		{"expired past the tolerance", func(s *negotiatetest.Ticket) { s.End = now.Add(-6 * time.Minute) }, now, ErrExpired},
		{"not yet valid", func(s *negotiatetest.Ticket) { s.Start = now.Add(6 * time.Minute) }, now, ErrNotYetValid},
		{"authenticator from a clock 6 min behind", func(s *negotiatetest.Ticket) { s.CTime = now.Add(-6 * time.Minute) }, now, ErrSkew},
		{"ME's clock 6 min ahead", func(*negotiatetest.Ticket) {}, now.Add(6 * time.Minute), ErrSkew},
		{"authenticator for another client", func(s *negotiatetest.Ticket) { s.AuthenticatorClient = "mallory" }, now, ErrClient},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := defaultSpec(now)
			c.edit(&s)
			req, err := ParseAuthorization(header(t, s))
			require.NoError(t, err)
			var a Acceptor
			_, err = a.Accept(req, settings(t), c.at)
			assert.ErrorIs(t, err, c.want)
		})
	}
	// Inside the tolerance both ways, accepted.
	s := defaultSpec(now)
	s.End = now.Add(-4 * time.Minute)
	s.CTime = now.Add(-4 * time.Minute)
	req, err := ParseAuthorization(header(t, s))
	require.NoError(t, err)
	var a Acceptor
	_, err = a.Accept(req, settings(t), now)
	assert.NoError(t, err, "4 minutes is inside a 5-minute tolerance")
}

func TestAcceptRefusesReplay(t *testing.T) {
	now := time.Now()
	h := header(t, defaultSpec(now))
	var a Acceptor
	for i, want := range []error{nil, ErrReplay} {
		req, err := ParseAuthorization(h)
		require.NoError(t, err)
		_, err = a.Accept(req, settings(t), now.Add(time.Duration(i)*time.Second))
		if want == nil {
			require.NoError(t, err)
		} else {
			assert.ErrorIs(t, err, want)
		}
	}
	// Another device (another acceptor) has not seen it.
	req, err := ParseAuthorization(h)
	require.NoError(t, err)
	var b Acceptor
	_, err = b.Accept(req, settings(t), now)
	assert.NoError(t, err)
}

func TestAcceptNotConfigured(t *testing.T) {
	now := time.Now()
	req, err := ParseAuthorization(header(t, defaultSpec(now)))
	require.NoError(t, err)
	var a Acceptor
	_, err = a.Accept(req, Settings{Realm: realm}, now)
	assert.ErrorIs(t, err, ErrNotConfigured)
}

func TestParseAuthorizationRefuses(t *testing.T) {
	good := header(t, defaultSpec(time.Now()))
	ntlmB, err := negotiatetest.SPNEGOOffering([]byte("NTLMSSP\x00"), asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 2, 2, 10})
	require.NoError(t, err)
	emptyB, err := negotiatetest.SPNEGO(nil)
	require.NoError(t, err)
	for name, h := range map[string]string{
		"digest":        `Digest username="admin"`,
		"no token":      "Negotiate",
		"blank token":   "Negotiate   ",
		"not base64":    "Negotiate !!!!",
		"too long":      "Negotiate " + string(make([]byte, MaxToken+1)),
		"not DER":       "Negotiate " + base64.StdEncoding.EncodeToString([]byte("hello")),
		"NTLM offered":  "Negotiate " + base64.StdEncoding.EncodeToString(ntlmB),
		"no mechToken":  "Negotiate " + base64.StdEncoding.EncodeToString(emptyB),
		"truncated":     good[:len(good)/2],
		"NegotiateXYZ":  "NegotiateXYZ abc",
		"mech not krb5": "Negotiate " + base64.StdEncoding.EncodeToString(spnegoToken(t, spnegoToken(t, []byte{0x30, 0}))),
	} {
		_, err := ParseAuthorization(h)
		assert.ErrorIs(t, err, ErrMalformed, name)
	}
	assert.True(t, IsNegotiate("negotiate abc"), "the scheme is case-insensitive")
}

// The PAC path, on gokrb5's Active Directory vector: the user's SID and
// its groups', the PAC's server signature checked with the service key,
// and a PAC whose signature does not match refused.
func TestPACSIDs(t *testing.T) {
	raw, err := hex.DecodeString(testdata.MarshaledPAC_AD_WIN2K_PAC)
	require.NoError(t, err)
	ktb, err := hex.DecodeString(testdata.KEYTAB_SYSHTTP_TEST_GOKRB5)
	require.NoError(t, err)
	kt := keytab.New()
	require.NoError(t, kt.Unmarshal(ktb))
	pn, _ := types.ParseSPNString("sysHTTP")
	key, _, err := kt.GetEncryptionKey(pn, "TEST.GOKRB5", 2, 18)
	require.NoError(t, err)

	enc := func(pac []byte) *messages.EncTicketPart {
		inner, err := asn1.Marshal(types.AuthorizationData{{ADType: adtype.ADWin2KPAC, ADData: pac}})
		require.NoError(t, err)
		return &messages.EncTicketPart{AuthorizationData: types.AuthorizationData{{ADType: adtype.ADIfRelevant, ADData: inner}}}
	}
	sids, ok, err := pacSIDs(enc(raw), key)
	require.NoError(t, err)
	require.True(t, ok)
	require.NotEmpty(t, sids)
	assert.Equal(t, "S-1-5-21-3167651404-3865080224-2280184895-1105", sids[0].String(), "testuser1's SID: logon domain + user RID")
	assert.Greater(t, len(sids), 1, "and its groups")

	// A signature that does not match is refused, not read past.
	bad := append([]byte(nil), raw...)
	bad[len(bad)-1] ^= 0xff
	_, _, err = pacSIDs(enc(bad), key)
	assert.Error(t, err)

	// A buffer table that runs past the PAC is refused before gokrb5 reads it.
	short := append([]byte(nil), raw[:40]...)
	_, _, err = pacSIDs(enc(short), key)
	assert.Error(t, err)
	huge := append([]byte(nil), raw...)
	huge[0], huge[1], huge[2], huge[3] = 0xff, 0xff, 0xff, 0x7f
	_, _, err = pacSIDs(enc(huge), key)
	assert.Error(t, err)

	// No PAC at all: not an error, not from the PAC.
	_, ok, err = pacSIDs(&messages.EncTicketPart{}, key)
	require.NoError(t, err)
	assert.False(t, ok)
}

func TestSIDForms(t *testing.T) {
	const b64 = "AQUAAAAAAAUVAAAA3PTcO4M9K0aCi6YoAAIAAA=="
	s, err := ParseSID(b64)
	require.NoError(t, err)
	str := s.String()
	assert.Equal(t, "S-1-5-21-1004336348-1177238915-682003330-512", str)
	s2, err := ParseSID(str)
	require.NoError(t, err)
	assert.True(t, s.Equal(s2))
	assert.Equal(t, b64, s2.Base64())
	for _, bad := range []string{"", "S-1", "S-2-5-21", "S-1-5-x", "AQ==", "AQUAAAAAAAUVAAAA", "S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16"} {
		_, err := ParseSID(bad)
		assert.ErrorIs(t, err, ErrSID, bad)
	}
	p := PrincipalSID("alice", "amtsim.test")
	assert.Equal(t, p, PrincipalSID("alice", "AMTSIM.TEST"), "the realm is upper-cased")
	assert.NotEqual(t, p, PrincipalSID("bob", "AMTSIM.TEST"))
	assert.Regexp(t, `^S-1-5-21-\d+-\d+-\d+-\d+$`, p.String())
	_, err = checkSID(p)
	assert.NoError(t, err)
}

func TestParsePrincipal(t *testing.T) {
	n, r, err := ParsePrincipal("alice@AMTSIM.TEST", "")
	require.NoError(t, err)
	assert.Equal(t, [2]string{"alice", "AMTSIM.TEST"}, [2]string{n, r})
	n, r, err = ParsePrincipal("bob", "AMTSIM.TEST")
	require.NoError(t, err)
	assert.Equal(t, [2]string{"bob", "AMTSIM.TEST"}, [2]string{n, r})
	for _, bad := range []string{"", "@R", "x@", "nobody"} {
		_, _, err := ParsePrincipal(bad, "")
		assert.Error(t, err, bad)
	}
}

func TestKeyFromPassword(t *testing.T) {
	// RFC 4757's key is MD4(UTF-16LE(password)): the NT hash, whose value
	// for "password" is well known.
	k, err := KeyFromPassword("password")
	require.NoError(t, err)
	assert.Equal(t, "8846f7eaee8fb117ad06bdd830b7586c", hex.EncodeToString(k))
	_, err = KeyFromPassword("")
	assert.Error(t, err)
}

// The replay cache forgets what is past the tolerance, and refuses (fails
// closed) when it holds maxReplay authenticators inside it.
func TestReplayCacheBounds(t *testing.T) {
	now := time.Now()
	var a Acceptor
	for i := range maxReplay {
		require.NoError(t, a.remember(replayKey{client: "c", ctime: int64(i)}, now, time.Minute))
	}
	assert.ErrorIs(t, a.remember(replayKey{client: "c", ctime: -1}, now, time.Minute), ErrReplay, "full inside the tolerance")
	later := now.Add(3 * time.Minute)
	require.NoError(t, a.remember(replayKey{client: "c", ctime: -1}, later, time.Minute), "aged entries make room")
	assert.Len(t, a.seen, 1)
}
