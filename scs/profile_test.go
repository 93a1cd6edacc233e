package scs

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The default profile survives its JSON form (what --print-profile
// writes and --profile reads), and a file's empty fields take the
// defaults.
func TestProfileFileRoundTrip(t *testing.T) {
	p := DefaultProfile("")
	p.AcceptNonSecure = true
	p.Kerberos = &Kerberos{Realm: "AMTSIM.TEST", KeyVersion: 3, Encryption: 1, MasterKey: []byte("0123456789abcdef"), MaxClockSkew: 5}
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
