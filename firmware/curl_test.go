package firmware

import (
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/amtsim/amtsim/clock"
	"github.com/amtsim/amtsim/identity"
	"github.com/amtsim/amtsim/internal/netns"
	"github.com/amtsim/amtsim/mebx"
	"github.com/amtsim/amtsim/nic"
	"github.com/amtsim/amtsim/wsman"
)

// curl --digest, from a network namespace, against the device's 16992 on
// a TAP: the admin with the MEBx password gets a SOAP answer; a wrong
// password gets 401; so does an empty Digest response (CVE-2017-5689).
func TestCurlDigestOverTAP(t *testing.T) {
	netns.Need(t, "curl")
	const (
		kernelSide = "198.19.252.1"
		deviceIP   = "198.19.252.10"
	)
	ns := netns.New(t)
	tap := ns.TAP(t, "amt0", kernelSide+"/24")
	stacks := nic.NewStacks(nic.StackOptions{})
	t.Cleanup(stacks.Close)

	id, err := identity.Of(9, 0, 2)
	require.NoError(t, err)
	s := setupSettings(t, id)
	s.DHCP, s.IP, s.Netmask = false, netip.MustParseAddr(deviceIP), netip.MustParseAddr("255.255.255.0")
	s.SCSAddress = netip.MustParseAddr(kernelSide) // nothing listens: Hellos fail, which is fine here
	require.NoError(t, s.Validate())
	d := bootDevice(t, Options{Uplink: tap, Stacks: stacks, Clock: clock.Real()}, id, s)
	d.ev.wait(t, "amt.listening", 1, 10*time.Second)

	url := "http://" + deviceIP + ":16992/wsman"
	body := string(wsman.Marshal(wsman.Header{To: url, Action: wsman.ActionGet, MessageID: "uuid:1", ReplyTo: wsman.Anonymous,
		ResourceURI: wsman.AMTSchema + "AMT_GeneralSettings"}, ""))
	curl := func(args ...string) string {
		t.Helper()
		base := []string{"curl", "-sS", "--max-time", "10", "-D", "-", "-H", "Content-Type: " + wsman.ContentType, "--data-binary", body}
		out, err := ns.Exec(append(append(base, args...), url)...)
		require.NoError(t, err, "%s", out)
		return out
	}

	out := curl("--digest", "-u", "admin:"+testPassword)
	assert.Contains(t, out, "HTTP/1.1 401 Unauthorized", "the challenge first")
	assert.Regexp(t, `HTTP/1.1 200 OK\r\n(?s:.*)Server: Intel\(R\) Active Management Technology 5`, out)
	assert.Contains(t, out, "<b:Action>"+wsman.ActionGet+"Response</b:Action>")
	assert.Contains(t, out, "<h:DigestRealm>"+d.realm+"</h:DigestRealm>")

	out = curl("--digest", "-u", "admin:Wrong-Pass1!")
	assert.NotContains(t, out, "200 OK")
	assert.Equal(t, 2, strings.Count(out, "HTTP/1.1 401 Unauthorized"), "refused after the challenge")

	// An empty response with a live nonce, as the CVE-2017-5689 exploit
	// sends it.
	first := curl()
	m := regexp.MustCompile(`nonce="([0-9a-f]+)"`).FindStringSubmatch(first)
	require.Len(t, m, 2, "%s", first)
	out = curl("-H", `Authorization: Digest username="admin", realm="`+d.realm+`", nonce="`+m[1]+
		`", uri="/wsman", response="", qop=auth, nc=00000001, cnonce="abc"`)
	assert.Contains(t, out, "HTTP/1.1 401 Unauthorized")
	assert.NotContains(t, out, "DigestRealm>")
	assert.Equal(t, mebx.StateIn, d.current().State)
}
