package scs

import (
	"encoding/hex"
	"encoding/json"
	"testing"

	"github.com/amtsim/amtsim/negotiate"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The default profile survives its JSON form (what --print-profile
// writes and --profile reads), and a file's empty fields take the
// defaults.
func TestProfileFileRoundTrip(t *testing.T) {
	p := DefaultProfile("")
	p.AcceptNonSecure = true
	p.Kerberos = &Kerberos{Realm: "AMTSIM.TEST", KeyVersion: 3, Encryption: 0, SPNs: []string{"HTTP/{fqdn}"}, MasterKey: []byte("0123456789abcdef"), MaxClockSkew: 5}
	b, err := json.Marshal(p.File())
	require.NoError(t, err)
	back, err := ParseProfile(b)
	require.NoError(t, err)
	assert.Equal(t, p, back)

	q, err := ParseProfile([]byte(`{"domain":"corp.example","new_mebx_password":"Other-Mebx5!"}`))
	require.NoError(t, err)
	assert.Equal(t, "corp.example", q.DomainName)
	assert.Equal(t, DefaultProfile("").AdminPassword, q.AdminPassword)
	assert.Equal(t, "Other-Mebx5!", q.NewMEBxPassword)
	assert.False(t, q.AcceptNonSecure)

	for _, bad := range []string{`{"admin_pasword":"x"}`, `{"users":3}`, `{} {}`, `[`, ``} {
		_, err := ParseProfile([]byte(bad))
		assert.Error(t, err, "%q", bad)
	}
}

func FuzzParseProfile(f *testing.F) {
	b, _ := json.Marshal(DefaultProfile("corp.example").File())
	f.Add(b)
	f.Add([]byte(`{"kerberos":{"realm":"R","master_key":"AAAA"}}`))
	f.Add([]byte(`{"users":[{"name":"u","realms":[1,2]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := ParseProfile(b)
		if err != nil {
			return
		}
		// What it read, it writes back the same.
		again, err := json.Marshal(p.File())
		if err != nil {
			t.Fatal(err)
		}
		q, err := ParseProfile(again)
		if err != nil {
			t.Fatalf("a profile's own JSON does not parse: %v", err)
		}
		if qb, _ := json.Marshal(q.File()); string(qb) != string(again) {
			t.Fatalf("round trip changed the profile:\n%s\n%s", again, qb)
		}
	})
}

// A profile the devices would refuse is refused at start, every problem
// named in one message; the default profile passes.
func TestProfileValidate(t *testing.T) {
	p := DefaultProfile("amtsim.example")
	require.NoError(t, p.Validate())
	_, err := NewServer(ServerOptions{DB: &DB{}, NoTLS: true, Profile: p})
	require.NoError(t, err)

	p.AdminPassword = "admin"
	p.NewMEBxPassword = "weak"
	p.Users = append(p.Users, User{Name: "bad name", Password: "Oper-Pass4!"}, User{Name: "x", Password: "Oper-Pass4!", Access: 3, Realms: []uint32{1}})
	p.Kerberos = &Kerberos{Realm: "", MasterKey: []byte{1, 2}}
	err = p.Validate()
	require.ErrorIs(t, err, ErrBadProfile)
	for _, want := range []string{"admin_password", "new_mebx_password", `"bad name"`, "access 3", "realm 1", "kerberos: no realm", "16-byte key"} {
		assert.Contains(t, err.Error(), want)
	}
	assert.NotContains(t, err.Error(), "\n", "one message")
	_, err = NewServer(ServerOptions{DB: &DB{}, NoTLS: true, Profile: p})
	assert.ErrorIs(t, err, ErrBadProfile, "the server does not start with it")
	_, err = NewServer(ServerOptions{DB: &DB{}, NoTLS: true, Profile: p, Flaws: Flaws{UncheckedProfile: true}})
	assert.NoError(t, err, "unless told to, as a flaw")
}

// What an administrator gives for Negotiate: the AMT object's password
// (the SCS derives the RC4-HMAC key AMT takes), users by principal or by
// SID in either form, all turned into what AMT takes; and what disagrees
// is refused, named.
func TestProfileKerberos(t *testing.T) {
	p, err := ParseProfile([]byte(`{"kerberos":{"realm":"AMTSIM.TEST","password":"password","key_version":2,"encryption":0,"max_clock_skew":5},
		"users":[{"kerberos_principal":"alice","access":2,"realms":[13]},
		         {"kerberos_principal":"bob@OTHER.TEST","access":1,"realms":[3]},
		         {"kerberos_sid":"S-1-5-21-1004336348-1177238915-682003330-512","access":2,"realms":[3]}]}`))
	require.NoError(t, err)
	require.NoError(t, p.Validate())
	assert.Equal(t, "8846f7eaee8fb117ad06bdd830b7586c", hex.EncodeToString(p.Kerberos.MasterKey), "MD4 of the UTF-16LE password")
	assert.Equal(t, negotiate.PrincipalSID("alice", "AMTSIM.TEST").Base64(), p.Users[0].KerberosSID, "a bare name is in the profile's realm")
	assert.Equal(t, negotiate.PrincipalSID("bob", "OTHER.TEST").Base64(), p.Users[1].KerberosSID)
	assert.Equal(t, "AQUAAAAAAAUVAAAA3PTcO4M9K0aCi6YoAAIAAA==", p.Users[2].KerberosSID, "S-1-… becomes AMT's base64")
	f := p.File()
	assert.Empty(t, f.Kerberos.MasterKey, "the file keeps the password, not both")

	p.Kerberos.Encryption, p.Kerberos.MaxClockSkew = 1, 10
	p.Kerberos.MasterKey = make([]byte, 16)
	p.Kerberos.SPNs = []string{"nohost"}
	p.Users[0].KerberosSID = "AQ=="
	p.Users[1].KerberosSID = negotiate.PrincipalSID("carol", "OTHER.TEST").Base64()
	err = p.Validate()
	require.ErrorIs(t, err, ErrBadProfile)
	for _, want := range []string{"not the key of password", "encryption 1", "max_clock_skew 10", `spn "nohost"`, "users[0]: kerberos_sid", "users[1]: kerberos_sid is not the SID of kerberos_principal"} {
		assert.Contains(t, err.Error(), want)
	}
}
