package firmware

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/negotiate"
	"github.com/amtsim/amtsim/negotiate/negotiatetest"
	"github.com/amtsim/amtsim/scs"
	"github.com/amtsim/amtsim/wsman"
)

// Negotiate on a device the reference SCS provisioned with Kerberos: the
// AMT object's password becomes the master key, users are given by
// principal. A ticket for a user in the ACL is served as that user with
// that user's rights; every bad ticket is 401 with both challenges,
// counted, and logged without the token; Digest keeps working beside it.
// (The same against MIT Kerberos and curl: cmd/amtsim's
// TestNegotiateWithMITKerberos.)
func TestDeviceNegotiate(t *testing.T) {
	const (
		realm   = "AMTSIM.EXAMPLE"
		svcPass = "Amt-Object-Pass1!"
		spn     = "HTTP/optiplex-42.amtsim.example"
	)
	r := newRigClock(t, 7, clock.Real())
	newID, _ := identity.Of(51, 0, 7)
	p := profile(t, newTestCA(t), newID)
	p.Certify, p.Key = nil, nil
	key, err := negotiate.KeyFromPassword(svcPass)
	require.NoError(t, err)
	p.Kerberos = &scs.Kerberos{Realm: realm, Password: svcPass, MasterKey: key, MaxClockSkew: 5}
	p.Users = []scs.User{
		{KerberosSID: negotiate.PrincipalSID("alice", realm).Base64(), Access: 2, Realms: []uint32{13}},
		{KerberosSID: negotiate.PrincipalSID("root", realm).Base64(), Access: 2, Realms: []uint32{realmPTAdministration}},
		{KerberosSID: negotiate.PrincipalSID("local", realm).Base64(), Access: 0, Realms: []uint32{13}},
	}
	require.NoError(t, p.Validate())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err = scs.Provision(ctx, r.target(true), p, nil)
	require.NoError(t, err)
	r.d.ev.wait(t, "amt.listening", 2, 10*time.Second)

	get := string(wsman.Marshal(wsman.Header{Action: wsman.ActionGet, MessageID: "1", ResourceURI: wsman.AMTSchema + "AMT_GeneralSettings"}, ""))
	put := string(wsman.Marshal(wsman.Header{Action: wsman.ActionPut, MessageID: "2", ResourceURI: wsman.AMTSchema + "AMT_GeneralSettings"},
		`<g:AMT_GeneralSettings xmlns:g="`+wsman.AMTSchema+`AMT_GeneralSettings"><g:HostName>renamed</g:HostName></g:AMT_GeneralSettings>`))
	send := func(authz, body string) (*http.Response, string) {
		t.Helper()
		c, err := r.dial(ctx, "tcp", netip.AddrPortFrom(r.d.Addr(), PortHTTP).String())
		require.NoError(t, err)
		defer c.Close()
		req, _ := http.NewRequest(http.MethodPost, "http://device/wsman", strings.NewReader(body))
		req.Header.Set("Authorization", authz)
		require.NoError(t, req.Write(c))
		resp, err := http.ReadResponse(bufio.NewReader(c), req)
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	ticket := func(client string) negotiatetest.Ticket {
		return negotiatetest.Ticket{Service: spn, Realm: realm, Password: svcPass, Client: client}
	}
	header := func(tk negotiatetest.Ticket) string {
		t.Helper()
		h, err := tk.Header()
		require.NoError(t, err)
		return h
	}

	resp, body := send(header(ticket("alice")), get)
	require.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.Contains(t, body, "<h:HostName>optiplex-42</h:HostName>")
	login := r.d.ev.named("session.login")
	require.NotEmpty(t, login)
	assert.Contains(t, attr(login[len(login)-1], "user"), "alice@"+realm, "the call is made as alice")

	// Each as its realms allow: alice (General Info) reads the general
	// settings but not the TLS settings, root (PT Administration) reads
	// both; neither changes anything, a user ACL entry never does.
	tlsGet := string(wsman.Marshal(wsman.Header{Action: wsman.ActionGet, MessageID: "3", ResourceURI: wsman.TLSSettingData,
		Selectors: map[string]string{"InstanceID": wsman.TLSSettingsNetwork}}, ""))
	_, body = send(header(ticket("alice")), tlsGet)
	assert.Contains(t, body, "AccessDenied", "AMT_TLSSettingData is outside alice's realms")
	resp, body = send(header(ticket("root")), tlsGet)
	assert.Equal(t, http.StatusOK, resp.StatusCode, body)
	assert.Contains(t, body, "AMT_TLSSettingData", "PT Administration reads everything")
	for _, who := range []string{"alice", "root"} {
		_, body = send(header(ticket(who)), put)
		assert.Contains(t, body, "AccessDenied", "%s may not change", who)
	}

	refused := func(why string, authz string, wantReason string) {
		t.Helper()
		before := r.d.Stats.NegotiateFailures.Load()
		resp, _ := send(authz, get)
		assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, why)
		ch := resp.Header.Values("WWW-Authenticate")
		assert.Contains(t, ch, "Negotiate", why)
		assert.True(t, len(ch) == 2 && strings.HasPrefix(ch[0], "Digest "), "%s: Digest beside it: %q", why, ch)
		assert.Equal(t, before+1, r.d.Stats.NegotiateFailures.Load(), why)
		failed := r.d.ev.named("auth.failed")
		require.NotEmpty(t, failed)
		last := failed[len(failed)-1]
		assert.Contains(t, attr(last, "reason"), wantReason, why)
		tok := authz[len("Negotiate "):]
		for _, a := range last.Attrs {
			assert.NotContains(t, a.Value.String(), tok[:min(len(tok), 40)], "%s: no token in the log", why)
		}
	}
	refused("a user not in the ACL", header(ticket("bob")), "not in the ACL")
	refused("a local-only user", header(ticket("local")), "locally only")
	other := ticket("alice")
	other.Service, other.Password = "HTTP/fileserver.amtsim.example", "Fileserver-Pass1!"
	refused("a ticket for another service", header(other), "does not open")
	expired := ticket("alice")
	expired.Start, expired.End = time.Now().Add(-2*time.Hour), time.Now().Add(-10*time.Minute)
	refused("an expired ticket", header(expired), "expired")
	h := header(ticket("alice"))
	resp, _ = send(h, get)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	refused("the same authenticator again", h, "replayed")
	r.d.SkewClock(6 * time.Minute)
	refused("the ME's clock 6 minutes ahead", header(ticket("alice")), "clock skew")
	r.d.SkewClock(-6 * time.Minute)
	refused("garbage", "Negotiate AAAA", "malformed")

	// Digest beside it.
	resp, _ = send("", get)
	require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	assert.Len(t, resp.Header.Values("WWW-Authenticate"), 2, "Kerberos is on: both schemes offered")
	_, err = r.wsmanAs("admin", "Admin-Pass3!").Get(ctx, wsman.GeneralSettings, nil)
	assert.NoError(t, err, "Digest as admin still works")
}

// attr is an event's attribute as a string ("" when absent).
func attr(e Event, key string) string {
	if v, ok := e.Attr(key); ok {
		return v.String()
	}
	return ""
}
