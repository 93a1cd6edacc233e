package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/event"
	"github.com/amtsim/amtsim/firmware"
	"github.com/amtsim/amtsim/fleet"
	"github.com/amtsim/amtsim/internal/netns"
	"github.com/amtsim/amtsim/internal/syncbuf"
	"github.com/amtsim/amtsim/nic"
	"github.com/amtsim/amtsim/scs"
	"github.com/amtsim/amtsim/wsman"
)

// The provisioned Kerberos credentials against MIT Kerberos, all in a
// namespace of the test's own: dnsmasq for DHCP and DNS, krb5kdc with a
// realm the test creates, the device's service principals with the AMT
// object password the SCS's profile gives (RC4-HMAC, the key AMT 5 takes),
// `amtsim scs` provisioning one device on a TAP. Then kinit and
// `curl --negotiate -u :` to the device's WS-MAN endpoint: 200 as that
// user, with that user's rights; a user not in the ACL, a ticket for
// another service, a replayed authenticator, a clock skew past the
// tolerance and a ticket the KDC let expire are each 401.
func TestNegotiateWithMITKerberos(t *testing.T) {
	netns.Need(t, "dnsmasq", "curl", "krb5kdc")
	const (
		seed    = 37
		domain  = "amtsim.test"
		realm   = "AMTSIM.TEST"
		router  = "198.19.250.1"
		svcPass = "Amt-Object-Pass1!"
	)
	ns := netns.New(t)
	tap := ns.TAP(t, "amt0", router+"/24")
	dir := t.TempDir()
	dnsLog := ns.Dnsmasq(t, netns.DnsmasqOptions{Interface: "amt0", Range: "198.19.250.100,198.19.250.200,255.255.255.0,1h",
		Domain: domain, Hosts: []string{"ProvisionServer." + domain + "," + router}})
	kdc := ns.KDC(t, netns.KDCOptions{Realm: realm, Listen: router, Domain: domain})

	// The reference SCS's profile, as an administrator writes it: the AMT
	// object's password, the SPNs, users by principal, a 1-minute
	// tolerance.
	code, printed, stderr := amtsim(t, "scs", "--print-profile")
	require.Equal(t, exitOK, code, stderr)
	var pf scs.ProfileFile
	require.NoError(t, json.Unmarshal([]byte(printed), &pf))
	pf.AcceptNonSecure = true
	pf.Kerberos = &scs.KerberosFile{Realm: realm, Password: svcPass, KeyVersion: 1, MaxClockSkew: 1,
		SPNs: []string{"HTTP/{fqdn}", "HTTP/{fqdn}:16992", "HTTP/{fqdn}:16993"}}
	pf.Users = []scs.User{
		{KerberosPrincipal: "alice", Access: 2, Realms: []uint32{13}}, // General Info: reads, no changes
		{KerberosPrincipal: "brief", Access: 2, Realms: []uint32{13}},
	}
	profilePath := filepath.Join(dir, "profile.json")
	b, err := json.Marshal(pf)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(profilePath, b, 0o600))
	self, err := os.Executable()
	require.NoError(t, err)
	scsCmd := ns.Command(self, "scs", "--listen", router+":9971", "--db", filepath.Join(dir, "scs.db"), "--generate", fmt.Sprintf("%d:0:1", seed),
		"--mebx-password", defaultMEBxPassword, "--profile", profilePath)
	scsCmd.Env = append(os.Environ(), mainEnv+"=1")
	var scsLog syncbuf.Buffer
	scsCmd.Stdout, scsCmd.Stderr = &scsLog, &scsLog
	require.NoError(t, scsCmd.Start())
	t.Cleanup(func() {
		_ = scsCmd.Process.Signal(syscall.SIGTERM)
		_ = scsCmd.Wait()
		if t.Failed() {
			t.Logf("amtsim scs:\n%s\ndnsmasq:\n%s", scsLog.String(), dnsLog.String())
		}
	})
	require.Eventually(t, func() bool { return strings.Contains(scsLog.String(), "scs.listening") }, 20*time.Second, 20*time.Millisecond)
	assert.NotContains(t, scsLog.String(), svcPass, "the AMT object's password is not logged")

	var mu sync.Mutex
	var events []firmware.Event
	stacks := nic.NewStacks(nic.StackOptions{})
	t.Cleanup(stacks.Close)
	f, err := fleet.New(context.Background(), fleet.Options{Devices: 1, Seed: seed, Uplink: tap, Stacks: stacks, Password: defaultMEBxPassword,
		Events: func(e firmware.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }})
	require.NoError(t, err)
	t.Cleanup(f.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, f.Start(ctx))
	require.NoError(t, f.Wait(ctx), "fleet: %+v", f.Summary())
	d := f.Devices()[0]
	st, err := d.Settings()
	require.NoError(t, err)
	require.True(t, st.AMT.KerberosEnabled)
	fqdn := st.HostName + "." + domain
	// The ports re-arm after the commit; the device is served by name, as
	// a DNS server would give it (the namespace's hosts file). "other" is
	// another service on the same address, with a key of its own.
	hostsDir := filepath.Join("/etc/netns", ns.Name)
	require.NoError(t, os.MkdirAll(hostsDir, 0o755))
	t.Cleanup(func() { _ = os.RemoveAll(hostsDir) })
	require.NoError(t, os.WriteFile(filepath.Join(hostsDir, "hosts"),
		[]byte(fmt.Sprintf("%s %s other.%s\n", d.Addr(), fqdn, domain)), 0o644))

	for _, spn := range []string{"HTTP/" + fqdn, "HTTP/" + fqdn + ":16992", "HTTP/" + fqdn + ":16993"} {
		kdc.AddPrincipal(t, spn, svcPass, "arcfour-hmac:normal")
	}
	kdc.AddPrincipal(t, "HTTP/other."+domain, "Other-Service-Pass1!", "arcfour-hmac:normal")
	kdc.AddPrincipal(t, "alice", "Alice-Pass1!", "")
	kdc.AddPrincipal(t, "bob", "Bob-Pass1!", "")
	kdc.AddPrincipal(t, "brief", "Brief-Pass1!", "")
	// The KDC gives brief's tickets 10 seconds.
	mod, err := kdc.Command("kadmin.local", "-r", realm, "-q", "modprinc -maxlife 10sec brief").CombinedOutput()
	require.NoError(t, err, "%s", mod)

	get := string(wsman.Marshal(wsman.Header{To: "/wsman", Action: wsman.ActionGet, MessageID: "uuid:1", ReplyTo: wsman.Anonymous,
		ResourceURI: wsman.AMTSchema + "AMT_GeneralSettings"}, ""))
	put := string(wsman.Marshal(wsman.Header{To: "/wsman", Action: wsman.ActionPut, MessageID: "uuid:2", ReplyTo: wsman.Anonymous,
		ResourceURI: wsman.AMTSchema + "AMT_GeneralSettings"},
		`<g:AMT_GeneralSettings xmlns:g="`+wsman.AMTSchema+`AMT_GeneralSettings"><g:HostName>renamed</g:HostName></g:AMT_GeneralSettings>`))
	curlURL := func(user, url, body string, extra ...string) string {
		t.Helper()
		args := append([]string{"curl", "-sS", "-v", "--max-time", "10", "-D", "-", "-H", "Content-Type: " + wsman.ContentType,
			"--data-binary", body}, extra...)
		cmd := ns.Command(append(args, url)...)
		cmd.Env = append(os.Environ(), kdc.Env(user)...)
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "%s", out)
		return string(out)
	}
	curl := func(user, host, body string, extra ...string) string {
		t.Helper()
		return curlURL(user, "http://"+host+":16992/wsman", body, extra...)
	}
	loginsAs := func(user string) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, e := range events {
			if v, ok := e.Attr("user"); ok && e.Name == event.SessionLogin && v.String() == user {
				n++
			}
		}
		return n
	}
	failures := func() uint64 { return d.Stats.NegotiateFailures.Load() }
	ok200 := regexp.MustCompile(`HTTP/1.1 200 OK`)

	kdc.Kinit(t, "alice", "Alice-Pass1!", "alice", 0)
	out := curl("alice", fqdn, get, "--negotiate", "-u", ":")
	require.Regexp(t, ok200, out)
	assert.Contains(t, out, "<h:HostName>"+st.HostName+"</h:HostName>")
	assert.Equal(t, 1, loginsAs("alice@"+realm), "the WS-MAN call is made as alice")
	// The same on 16993, over the TLS the SCS set up (AMT 5: TLS 1.0).
	out = curlURL("alice", "https://"+fqdn+":16993/wsman", get, "--negotiate", "-u", ":",
		"--cacert", filepath.Join(dir, "ca.crt"), "--tlsv1.0", "--ciphers", "DEFAULT@SECLEVEL=0")
	require.Regexp(t, ok200, out, "Negotiate inside TLS on 16993")
	assert.Equal(t, 2, loginsAs("alice@"+realm))
	out = curl("alice", fqdn, put, "--negotiate", "-u", ":")
	assert.Contains(t, out, "AccessDenied", "alice's realms give no right to change")

	// The same Authorization header again is a replay.
	m := regexp.MustCompile(`(?m)^> Authorization: (Negotiate \S+)`).FindStringSubmatch(out)
	require.Len(t, m, 2, "curl -v shows the header it sent: %s", out)
	before := failures()
	out = curl("alice", fqdn, get, "-H", "Authorization: "+m[1])
	assert.Contains(t, out, "HTTP/1.1 401")
	assert.NotRegexp(t, ok200, out)
	assert.Equal(t, before+1, failures(), "counted")

	kdc.Kinit(t, "bob", "Bob-Pass1!", "bob", 0)
	out = curl("bob", fqdn, get, "--negotiate", "-u", ":")
	assert.NotRegexp(t, ok200, out, "bob is not in the ACL")
	assert.Contains(t, out, "HTTP/1.1 401")

	out = curl("alice", "other."+domain, get, "--negotiate", "-u", ":")
	assert.NotRegexp(t, ok200, out, "a ticket for HTTP/other does not open with the device's key")

	d.SkewClock(2 * time.Minute)
	out = curl("alice", fqdn, get, "--negotiate", "-u", ":")
	assert.NotRegexp(t, ok200, out, "the ME's clock 2 minutes off, past the 1-minute tolerance")
	d.SkewClock(-2 * time.Minute)
	out = curl("alice", fqdn, get, "--negotiate", "-u", ":")
	require.Regexp(t, ok200, out, "back inside the tolerance")

	// The KDC ends brief's tickets 10 s after kinit. A client checks its
	// own tickets' ends against its own clock, so an expired ticket
	// reaches AMT from a client whose clock is behind the ME's: here the
	// ME's clock is put 75 s ahead, past the ticket's end plus the
	// 1-minute tolerance, while the ticket is still good on the client's.
	kdc.Kinit(t, "brief", "Brief-Pass1!", "brief", 0)
	issued := time.Now()
	out = curl("brief", fqdn, get, "--negotiate", "-u", ":")
	require.Regexp(t, ok200, out, "brief's ticket works while it lasts")
	ahead := time.Until(issued.Add(10*time.Second)) + time.Minute + 5*time.Second
	d.SkewClock(ahead)
	out = curl("brief", fqdn, get, "--negotiate", "-u", ":")
	d.SkewClock(-ahead)
	assert.NotRegexp(t, ok200, out, "brief's ticket has expired on the ME's clock")
	require.Less(t, time.Since(issued), 9*time.Second, "the ticket was still good on the client's clock")

	// Without credentials the 401 offers both schemes.
	out = curl("alice", fqdn, get)
	assert.Contains(t, out, "HTTP/1.1 401")
	assert.Contains(t, out, "WWW-Authenticate: Negotiate")
	assert.Contains(t, out, "WWW-Authenticate: Digest realm=")

	mu.Lock()
	var reasons []string
	for _, e := range events {
		if e.Name != event.AuthFailed {
			continue
		}
		if v, ok := e.Attr("reason"); ok {
			reasons = append(reasons, v.String())
		}
		for _, a := range e.Attrs {
			assert.NotContains(t, a.Value.String(), m[1][len("Negotiate "):][:40], "no token in the events")
		}
	}
	mu.Unlock()
	for _, want := range []string{"replayed", "bob@" + realm, "does not open", "clock skew", "expired"} {
		assert.True(t, anyContains(reasons, want), "a refusal says %q: %q", want, reasons)
	}
}

func anyContains(list []string, s string) bool {
	for _, x := range list {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}
